"""The Great Expectations side of a gate: run the suites' checkpoints in a file Data Context and
describe their failures in one line each (quality/gates.py decides and records; quality/suites.py
builds the suites; quality/metrics.py the frames they check).

The Data Context is kept under the lake at `<lake.root>/<lake.reports>/<quality.reports_dir>/gx`
(later volumes: `.../volume-<n>/gx`, see VOLUME_PREFIX): validation results as JSON in its
validations store, Data Docs (HTML) built once per gate for its suites; a remote lake is worked on
in a local folder and copied back (quality/docs.py).
The per-row frame is validated on Spark (or pandas when small), the one row of counts on pandas.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from pyspark.sql import SparkSession

from pipelines import lakefs
from pipelines.config import Conf, is_remote
from pipelines.stages import ROW_ID
from quality import docs

GX_DIR = "gx"
SITE_NAME = "quality"
SITE_DIR = "data_docs"
DATASOURCE = "staged_batches"  # Spark: the per-row frame of the staged batch
TOTALS_DATASOURCE = "batch_totals"  # pandas: the one row of counts
BATCH_DEFINITION = "whole batch"


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    failures: list[str]
    page: str
    result_json: str


# Data Docs volumes: GX's index build lists, and parses the run time of, every result stored in the
# project at every build (and, on a remote lake, the gate downloads the whole project first), so
# one project for every run ever made costs each gate more as runs accumulate (`python -m
# bench.data_docs`: bronze's gate 0.33 s in a new project, 0.64 s with 50 runs held, 7.53 s with
# 1,000; docs/quality.md, "Costs and limits"). A project therefore takes the gates of at most
# quality.docs_volume_runs runs per suite; the next gate opens the next volume. Volume 1 is the GX
# project directly under the reports folder (where it always was), volume n >= 2 the one under
# <reports>/volume-<n>. Nothing is moved: every page and result stays where its outcome row says.
VOLUME_PREFIX = "volume-"


def newest_volume(spark: SparkSession, reports: str) -> str:
    """The project root of the newest Data Docs volume under `reports`: the highest-numbered
    `reports/volume-<n>` whose index page exists (a volume whose first gate is still running, or
    failed before its build, has none and is not the newest yet), else `reports` itself (volume 1)."""
    if is_remote(reports):
        names = [entry.name for entry in lakefs.children(spark, reports) if entry.is_dir]
    else:
        names = [entry.name for entry in os.scandir(reports) if entry.is_dir()] if os.path.isdir(reports) else []
    numbers = [int(name[len(VOLUME_PREFIX):]) for name in names if re.fullmatch(rf"{VOLUME_PREFIX}[0-9]+", name)]
    for number in sorted((n for n in numbers if n >= 2), reverse=True):
        root = volume_root(reports, number)
        if (lakefs.exists(spark, index_page(root)) if is_remote(reports) else os.path.isfile(index_page(root))):
            return root
    return reports


def volume_root(reports: str, number: int) -> str:
    return reports if number == 1 else f"{reports.rstrip('/')}/{VOLUME_PREFIX}{number}"


def next_volume(reports: str, newest: str) -> str:
    """The root of the volume after `newest` (newest_volume's answer)."""
    number = 1 if newest == reports else int(newest.rsplit(VOLUME_PREFIX, 1)[1])
    return volume_root(reports, number + 1)


def index_page(volume: str) -> str:
    """The Data Docs front page of the volume whose project root is `volume`."""
    return f"{volume.rstrip('/')}/{GX_DIR}/{SITE_DIR}/index.html"


def validations_store(project_root: Path) -> Path:
    """The folder of the local GX project's validation results: <suite>/<run>/<time>/<batch>.json."""
    return project_root / GX_DIR / "uncommitted" / "validations"


def runs_held(project_root: Path, suites: Iterable[str]) -> int:
    """The most runs any of `suites` has results of in the local GX project at `project_root`."""
    validations = validations_store(project_root)
    return max((len(os.listdir(validations / suite)) for suite in suites if (validations / suite).is_dir()), default=0)


@contextmanager
def workspace(
    spark: SparkSession, reports: str, started: float, suites: list[str], volume_runs: int
) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """The local folder of the GX project this gate writes to, and the function mapping a file in
    it to its place in the lake (`reports`: the reports folder, pipelines.layout.Layout.quality_reports).

    The project is the newest volume, or the next one when the newest holds `volume_runs` runs of
    one of `suites` already. A local lake is written in place. For a remote lake, the volume is
    downloaded (GX's index lists the validation pages already in the site, so those come too; the
    static assets, rewritten by every build, do not), and the files this run wrote are copied back
    once the checkpoints are done.
    """
    if not is_remote(reports):
        Path(reports).mkdir(parents=True, exist_ok=True)
        # Two gates at once (two runs of a stage) would rewrite the same GX files: one at a time.
        with open(Path(reports) / ".gx.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            root = newest_volume(spark, reports)
            if runs_held(Path(root), suites) >= volume_runs:
                root = next_volume(reports, root)
                Path(root).mkdir(parents=True, exist_ok=True)
            yield Path(root), lambda local: local
        return
    local = Path(tempfile.mkdtemp(prefix="fruits-gx-"))
    try:
        root = newest_volume(spark, reports)
        docs.download_tree(spark, f"{root}/{GX_DIR}", local / GX_DIR, skip_prefixes=(f"{SITE_DIR}/static/",))
        if runs_held(local, suites) >= volume_runs:
            shutil.rmtree(local / GX_DIR)
            root = next_volume(reports, root)
        yield local, lambda path: root.rstrip("/") + "/" + Path(path).relative_to(local).as_posix()
        docs.upload_tree(spark, local, root, started - 1)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def run_checkpoints(root: Path, conf: Conf, run_id: str, validated_at: datetime, checks: list) -> list[SuiteResult]:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    context = gx.get_context(mode="file", project_root_dir=str(root))
    _configure(context, ProgressBarsConfig)
    docs.install_custom_styles(root / GX_DIR)
    examples = conf["quality.unexpected_examples"]
    validated = []
    for suite, frame, index_columns in checks:
        checkpoint = _checkpoint(context, _data_source(context, frame), suite, index_columns, examples)
        run = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_id, run_time=validated_at)
        )
        validated += [(suite.name, identifier, validation) for identifier, validation in run.run_results.items()]
    # One Data Docs build for the gate's suites (what GX's UpdateDataDocsAction does per checkpoint:
    # their pages, then the index, which lists the whole volume: once, not once per suite).
    suites = {ExpectationSuiteIdentifier(name=name) for name, _, _ in validated}
    context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=[*(i for _, i, _ in validated), *suites])
    return [
        SuiteResult(
            suite=name,
            success=bool(validation.success),
            evaluated=int(validation.statistics["evaluated_expectations"]),
            failures=[describe_failure(name, r) for r in validation.results if not r.success],
            page=_page_path(context, identifier),
            result_json=_result_json_path(context, identifier),
        )
        for name, identifier, validation in validated
    ]


def _data_source(context, frame):
    """The GX data source for `frame`: pandas for a pandas frame, else Spark (created on first use)."""
    pandas = isinstance(frame, pd.DataFrame)
    name = TOTALS_DATASOURCE if pandas else DATASOURCE
    try:
        return context.data_sources.get(name)
    except KeyError:
        if pandas:
            return context.data_sources.add_pandas(name=name)
        return context.data_sources.add_spark(name=name, persist=False)


def _configure(context, progress_bars_config) -> None:
    """One Data Docs site under gx/data_docs (GX's default local_site dropped), no progress bars."""
    sites = context.list_data_docs_sites()
    if "local_site" in sites:
        context.delete_data_docs_site("local_site")
    if SITE_NAME not in sites:
        context.add_data_docs_site(
            SITE_NAME,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{SITE_DIR}/"},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    context.variables.progress_bars = progress_bars_config(globally=False)
    context.variables.save()


def _checkpoint(context, source, suite, index_columns: list[str], examples: int):
    import great_expectations as gx

    name = suite.name
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": examples}
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[],  # the Data Docs: one build per gate, in run_checkpoints
            result_format=result_format,
        )
    )


def _page_path(context, identifier) -> str:
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE_NAME)
    return unquote(urlparse(urls[0]["site_url"]).path)


def _result_json_path(context, identifier) -> str:
    backend = context.validation_results_store.store_backend
    return str(Path(backend.full_base_directory, *identifier.to_tuple()).with_suffix(".json"))


# ---------------------------------------------------------------- failure descriptions


def describe_failure(suite_name: str, result) -> str:
    """One line for a failed expectation: suite, expectation, column, bounds and what was observed."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    bounds = ", ".join(
        f"{key}={_number(value)}" for key, value in config.kwargs.items() if key not in ("batch_id", "column") and value is not None
    )
    head = f"{suite_name}: {config.type}" + (f" on {column}" if column else "") + (f" ({bounds})" if bounds else "")
    return f"{head}: {_observed(result, column)}"


def _observed(result, column: str | None) -> str:
    config = result.expectation_config
    error = _exception_message(result.exception_info)
    if error:
        return f"could not be evaluated: {error}"
    details = result.result or {}
    if config.type == "expect_column_values_to_not_be_null" and details.get("unexpected_count"):
        # The gate validates frames whose NaN and infinities became null (suites.non_finite_as_null).
        what = "null" if column == ROW_ID else "null, NaN or infinite"
        if details.get("element_count") == 1:
            return f"observed {what}"
        ids = [str(entry.get(ROW_ID)) for entry in details.get("partial_unexpected_index_list") or []]
        return f"{details['unexpected_count']} of {details.get('element_count')} rows {what}" + (
            f", e.g. {', '.join(ids)}" if ids and column != ROW_ID else ""
        )
    if "unexpected_count" in details:
        values = details.get("partial_unexpected_list") or []
        if details.get("element_count") == 1 and values:
            return f"observed {_number(values[0])}"
        ids = [entry.get(ROW_ID) for entry in details.get("partial_unexpected_index_list") or []]
        if column == ROW_ID or not ids:
            shown = ", ".join(str(v) for v in values)
        else:
            shown = ", ".join(f"{i}: {_number(v)}" for i, v in zip(ids, values))
        return f"{details['unexpected_count']} of {details.get('element_count')} rows unexpected" + (
            f", e.g. {shown}" if shown else ""
        )
    if "observed_value" in details:
        return f"observed {_number(details['observed_value'])}"
    return "failed"


def _number(value):
    """1280.0 -> 1280 and 0.16666666 -> 0.166667 in messages (GX stores bounds as floats)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else float(f"{value:.6g}")
    return value


def _exception_message(info) -> str | None:
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None
