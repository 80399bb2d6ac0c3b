"""Quality gates: validate a stage's staged batch with Great Expectations before it is published.

`auditor(...)` gives the `audit` callable that `pipelines.lake.write_audit_publish` calls with
every table of the run staged and read back (`lake.Staged`: the batch and the quarantine rows
staged beside it), before anything is published. The audit:

1. derives in Spark the frames the suites check (quality/suites.py): per-row scalars of the batch
   (never the arrays themselves) and one row of counts over the batch, the quarantine rows staged
   beside it, and the published tables (reconciliation with the upstream layer, quarantine rate,
   gold's variance);
2. runs one GX checkpoint per suite (the per-row frame on Spark, the one row of counts, collected
   from Spark, on pandas) against a file Data Context kept under the lake
   at `<lake.root>/<lake.reports>/<quality.reports_dir>/gx`: validation results as JSON in its
   validations store, Data Docs (HTML) rebuilt by the checkpoint's UpdateDataDocsAction; a remote
   lake is worked on in a local folder and copied back (quality/docs.py);
3. appends the outcome to the outcomes table (quality/outcomes.py);
4. raises GateFailed, listing the failed expectations and the report, when any expectation failed:
   write_audit_publish then publishes nothing.

`require_upstream_passed(...)` is called by a stage before it reads its upstream layer.

A run whose stage found nothing new never calls the audit: no staging, no GX context, no
checkpoint, no Data Docs rebuild. `record_unvalidated(...)` then appends one outcome row saying
the run happened and validated nothing (pipelines/cli.py calls it); it is not a validation, so the
upstream check keeps reading the layer's last real one.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import lake, stages
from pipelines.config import Conf, is_remote
from pipelines.stages import ROW_ID
from quality import docs, outcomes
from quality.outcomes import Outcome

GX_DIR = "gx"
SITE_NAME = "quality"
SITE_DIR = "data_docs"
DATASOURCE = "staged_batches"  # Spark: the per-row frame of the staged batch
TOTALS_DATASOURCE = "batch_totals"  # pandas: the one row of counts
BATCH_DEFINITION = "whole batch"


class GateFailed(RuntimeError):
    """The batch failed its quality gate; nothing was published. The message lists the failed
    expectations, the report page and the Data Docs index."""


class UpstreamNotValidated(RuntimeError):
    """The layer a stage reads failed its last validation; the stage must not run on it."""


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    failures: list[str]
    page: str
    result_json: str


# ---------------------------------------------------------------- the API stages use


def auditor(
    spark: SparkSession, conf: Conf, layer: str, run_id: str, context: Mapping[str, object] | None = None
) -> "Auditor":
    """The `audit` callable for lake.write_audit_publish: validates the staged batch of `layer`.

    `context` holds facts only the stage knows (for example its input folder or its mode); they are
    recorded, as text, with the outcome and printed by `python -m quality.report`. The checks
    themselves need none: they derive everything from the staged tables (the batch and the
    quarantine rows staged beside it) and the published tables.
    """
    stages.get(layer)  # an unknown layer fails here, not at the audit
    return Auditor(spark, conf, layer, run_id, {str(key): str(value) for key, value in (context or {}).items()})


@dataclass
class Auditor:
    """The audit callable of one run; `called` says whether the run had a batch to validate."""

    spark: SparkSession
    conf: Conf
    layer: str
    run_id: str
    notes: dict[str, str]
    called: bool = False

    def __call__(self, staged: lake.Staged) -> None:
        self.called = True
        outcome = validate(self.spark, self.conf, self.layer, self.run_id, staged, self.notes)
        if not outcome.success:
            raise GateFailed(failure_message(outcome))
        print(
            f"{self.layer} quality gate passed for run {self.run_id}: {outcome.evaluated_expectations} expectations on "
            f"{outcome.batch_rows} rows; Data Docs: {outcome.docs_index}"
        )


# Context entry of the outcome row of a run that validated nothing.
NOTHING_VALIDATED = ("validated", "nothing: no new batch")


def record_unvalidated(spark: SparkSession, conf: Conf, audit: Auditor) -> Outcome:
    """Append the outcome row of a run that never called its audit (nothing new: no batch staged).

    One Delta append, no GX: success (nothing failed), no expectation evaluated, no report page;
    `outcomes.latest` skips such rows, so the layer's last validation, passed or failed, still
    decides whether the next stage runs.
    """
    outcome = Outcome(
        layer=audit.layer, run_id=audit.run_id, success=True, validated_at=datetime.now(timezone.utc), batch_rows=0,
        evaluated_expectations=0, failed_expectations=[], metrics={}, report_path="", result_paths=[],
        docs_index=docs_index_location(conf), context={**audit.notes, NOTHING_VALIDATED[0]: NOTHING_VALIDATED[1]},
    )
    outcomes.record(spark, conf, outcome)
    return outcome


def require_upstream_passed(spark: SparkSession, conf: Conf, layer: str) -> None:
    """Raise UpstreamNotValidated when the last validation of the layer `layer` reads failed.

    A layer never validated (no outcome recorded, e.g. published before the gates existed) is not
    refused: there is no failed validation to point at.
    """
    upstream = stages.get(layer).upstream
    if upstream is None:
        return
    last = outcomes.latest(spark, conf).get(upstream)
    if last is None or last.success:
        return
    failed = "\n".join(f"  - {failure}" for failure in last.failed_expectations)
    raise UpstreamNotValidated(
        f"{layer} refuses to run: the last validation of {upstream} (run {last.run_id}, "
        f"{last.validated_at:%Y-%m-%d %H:%M:%S} UTC) failed, so that batch was not published and {upstream} "
        f"may be incomplete. Failed expectations:\n{failed}\nReport: {last.report_path}\n"
        f"Fix the input or the thresholds (quality.{upstream}.* in conf) and rerun `python -m pipelines.{upstream}` "
        f"until its gate passes; `python -m quality.report` shows the latest results."
    )


def failure_message(outcome: Outcome) -> str:
    failed = "\n".join(f"  - {failure}" for failure in outcome.failed_expectations)
    return (
        f"{outcome.layer} quality gate failed for run {outcome.run_id}: {len(outcome.failed_expectations)} of "
        f"{outcome.evaluated_expectations} expectations failed, nothing was published.\n{failed}\n"
        f"Report: {outcome.report_path}\nData Docs: {outcome.docs_index}\n"
        f"Thresholds are conf settings quality.{outcome.layer}.*; fix the input or the stage and rerun."
    )


def reports_location(conf: Conf) -> str:
    """The GX project's folder under the lake (local path or s3a:// URI)."""
    return lake.lake_location(conf, conf["lake.reports"], conf["quality.reports_dir"])


def docs_index_location(conf: Conf) -> str:
    return f"{reports_location(conf)}/{GX_DIR}/{SITE_DIR}/index.html"


# ---------------------------------------------------------------- validation


def validate(
    spark: SparkSession, conf: Conf, layer: str, run_id: str, staged: lake.Staged, context: dict[str, str] | None = None
) -> Outcome:
    """Run the layer's suites on the staged batch, keep the reports, record and return the outcome."""
    from quality import suites

    started = time.time()
    validated_at = datetime.now(timezone.utc)
    stage = stages.get(layer)
    batch = staged.batch
    staged_quarantine = _staged_quarantine(spark, layer, staged)
    facts = stage.model_facts(spark, conf, staged) if stage.suite.versioned else None
    metrics = _totals(spark, conf, stage, batch, staged_quarantine, facts)
    rate = metrics["batch_quarantine_rate"]
    over = rate is None or not rate <= conf[f"quality.{layer}.max_quarantine_rate"]  # NaN is over too
    quarantined = _quarantine_examples(staged_quarantine, conf["quality.unexpected_examples"]) if over else []
    # NaN and infinity become null, which each bounded column's not-null expectation fails (suites.py).
    rows = row_frame(suites.row_checks(layer, batch), metrics["batch_rows"], conf["quality.pandas_max_rows"])
    try:
        checks = [
            (suites.rows_suite(layer, conf, facts), rows, [ROW_ID]),
            (suites.totals_suite(layer, conf, facts, quarantined), suites.non_finite_as_null(totals_frame(metrics)), []),
        ]
        with _workspace(spark, conf, started) as (local_root, to_lake):
            results = _run_checkpoints(local_root, conf, run_id, validated_at, checks)
            docs.localise_site(local_root / GX_DIR / SITE_DIR, started - 1)
            results = [
                SuiteResult(r.suite, r.success, r.evaluated, r.failures, to_lake(r.page), to_lake(r.result_json))
                for r in results
            ]
    finally:
        if isinstance(rows, DataFrame):
            rows.unpersist()
    failed = [r for r in results if not r.success]
    failures = [failure + _naming(failure, quarantined) for r in results for failure in r.failures]
    outcome = Outcome(
        layer=layer,
        run_id=run_id,
        success=not failed,
        validated_at=validated_at,
        batch_rows=int(metrics["batch_rows"]),
        evaluated_expectations=sum(r.evaluated for r in results),
        failed_expectations=failures,
        metrics={k: float(v) for k, v in metrics.items() if v is not None},
        report_path=(failed or results)[0].page,
        result_paths=[r.result_json for r in results],
        docs_index=docs_index_location(conf),
        context=context or {},
    )
    outcomes.record(spark, conf, outcome)
    return outcome


def row_frame(rows: DataFrame, batch_rows: int, pandas_max_rows: int) -> DataFrame | pd.DataFrame:
    """The per-row check frame the rows suite validates, non-finite numbers as nulls: collected to
    pandas when the batch has at most `pandas_max_rows` rows (GX's pandas engine evaluates every
    expectation in memory, where its Spark engine runs a job per expectation: the fixed cost of a
    small increment), else a persisted Spark frame (the caller unpersists it)."""
    from quality import suites

    if batch_rows <= pandas_max_rows:
        return suites.non_finite_as_null(rows.toPandas())
    return suites.non_finite_as_null(rows).persist()


def _staged_quarantine(spark: SparkSession, layer: str, staged: lake.Staged) -> DataFrame:
    """The quarantine rows write_audit_publish staged beside the batch in this run (none: empty)."""
    rows = staged.tables.get("quarantine")
    if rows is None:
        return spark.createDataFrame([], lake.QUARANTINE_SCHEMA)
    return rows.where(F.col("stage") == layer)


def _totals(
    spark: SparkSession, conf: Conf, stage: stages.Stage, batch: DataFrame, staged_quarantine: DataFrame,
    facts: stages.ModelFacts | None,
) -> dict[str, float | int | None]:
    """The counts of the `<layer>_totals` suite, computed in Spark and returned as one small dict."""
    from quality import suites

    layer = stage.name
    published = lake.read_table(spark, lake.table_location(conf, layer))
    quarantine_table = lake.read_table(spark, lake.table_location(conf, "quarantine"))
    after = suites.layer_after_publish(layer, published, batch)
    frame = suites.batch_counts(batch, staged_quarantine, _recorded_inputs(spark, layer, batch, published, quarantine_table))
    upstream = stage.upstream
    if upstream is None:
        frame = frame.crossJoin(suites.rows_after_publish(after))
    else:
        upstream_table = lake.read_table(spark, lake.table_location(conf, upstream))
        upstream_ids = (
            upstream_table.select(ROW_ID) if upstream_table is not None else spark.createDataFrame([], f"{ROW_ID} string")
        )
        quarantined = staged_quarantine.select(ROW_ID)
        if quarantine_table is not None:
            quarantined = quarantine_table.where(F.col("stage") == layer).select(ROW_ID).unionByName(quarantined)
        frame = frame.crossJoin(suites.reconciliation(upstream, upstream_ids, after, quarantined))
    if stage.suite.versioned:
        frame = frame.crossJoin(batch.agg(F.countDistinct("model_version").alias("model_versions")))
    metrics = frame.first().asDict()
    if facts is not None:
        metrics.update(array_length=facts.array_length, **{check.metric: check.value for check in facts.checks})
    return metrics


def _quarantine_examples(staged_quarantine: DataFrame, limit: int) -> list[str]:
    """'path: reason' for the first `limit` quarantine rows staged beside the batch (by path)."""
    rows = staged_quarantine.select("path", "reason").orderBy("path").limit(limit).collect()
    return [f"{row['path']}: {row['reason']}" for row in rows]


def _naming(failure: str, quarantined: list[str]) -> str:
    """For a failed quarantine rate, the files behind it (appended to its failure line)."""
    if "batch_quarantine_rate" not in failure or not quarantined:
        return ""
    return f"; quarantined in this batch (first {len(quarantined)}): " + "; ".join(quarantined)


def _recorded_inputs(
    spark: SparkSession, layer: str, batch: DataFrame, published: DataFrame | None, quarantine: DataFrame | None
) -> DataFrame:
    """image_id and path (null where unknown) of every input whose content the layer holds once the
    batch is published (a duplicate of a batch row loses nothing), and the paths it already
    quarantined. Quarantined contents are not matched: every empty file has the same hash, and fifty
    empty uploads must count as fifty rejections, not as one seen before."""
    frames = [batch.select(ROW_ID, F.lit(None).cast("string").alias("path"))]
    if published is not None:
        path = F.col("path") if "path" in published.columns else F.lit(None).cast("string")
        frames.append(published.select(ROW_ID, path.alias("path")))
    if quarantine is not None:
        frames.append(quarantine.where(F.col("stage") == layer).select(F.lit(None).cast("string").alias(ROW_ID), "path"))
    return reduce(DataFrame.unionByName, frames)


def totals_frame(metrics: dict) -> pd.DataFrame:
    """The totals as the one-row frame GX validates: counts as integers, ratios and unknowns as floats.

    A pandas frame: the counts are already computed (in Spark) and collected, and GX validates one
    row on pandas in ~0.2 s where a one-row Spark frame took ~2 s (a Spark job per metric).
    """

    def is_count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return pd.DataFrame(
        {
            key: pd.Series([value], dtype="int64") if is_count(value)
            else pd.Series([None if value is None else float(value)], dtype="float64")
            for key, value in metrics.items()
        }
    )


@contextmanager
def _workspace(spark: SparkSession, conf: Conf, started: float) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """The local folder GX works in, and the function mapping a file in it to its place in the lake.

    A local lake is written in place. For a remote lake, the GX project is downloaded (GX's index
    lists the validation pages already in the site, so those come too; the static assets, rewritten
    by every build, do not), and the files this run wrote are copied back once the checkpoints are done.
    """
    reports = reports_location(conf)
    if not is_remote(reports):
        Path(reports).mkdir(parents=True, exist_ok=True)
        # Two gates at once (two runs of a stage) would rewrite the same GX files: one at a time.
        with open(Path(reports) / ".gx.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield Path(reports), lambda local: local
        return
    local = Path(tempfile.mkdtemp(prefix="fruits-gx-"))
    try:
        docs.download_tree(spark, f"{reports}/{GX_DIR}", local / GX_DIR, skip_prefixes=(f"{SITE_DIR}/static/",))
        yield local, lambda path: reports + "/" + Path(path).relative_to(local).as_posix()
        docs.upload_tree(spark, local, reports, started - 1)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _run_checkpoints(root: Path, conf: Conf, run_id: str, validated_at: datetime, checks: list) -> list[SuiteResult]:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(root))
    _configure(context, ProgressBarsConfig)
    docs.install_custom_styles(root / GX_DIR)
    examples = conf["quality.unexpected_examples"]
    results = []
    for suite, frame, index_columns in checks:
        checkpoint = _checkpoint(context, _data_source(context, frame), suite, index_columns, examples)
        run = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_id, run_time=validated_at)
        )
        for identifier, validation in run.run_results.items():
            results.append(
                SuiteResult(
                    suite=suite.name,
                    success=bool(validation.success),
                    evaluated=int(validation.statistics["evaluated_expectations"]),
                    failures=[describe_failure(suite.name, r) for r in validation.results if not r.success],
                    page=_page_path(context, identifier),
                    result_json=_result_json_path(context, identifier),
                )
            )
    return results


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
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
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
