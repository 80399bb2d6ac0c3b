"""Quality gates: validate a stage's staged batch with Great Expectations before it is published.

`auditor(...)` gives the `audit` callable that `pipelines.lake.write_audit_publish` calls with
every table of the run staged and read back (`lake.Staged`: the batch and the quarantine rows
staged beside it), before anything is published. The audit:

1. derives in Spark the frames the suites check (quality/metrics.py, the suites quality/suites.py):
   per-row scalars of the batch (never the arrays themselves) and one row of counts over the batch,
   the quarantine rows staged beside it, and the published tables (reconciliation with the upstream
   layer, quarantine rate, gold's variance);
2. runs one GX checkpoint per suite (quality/gx_runner.py: the per-row frame on Spark, the one row
   of counts, collected from Spark, on pandas) against a file Data Context kept under the lake
   at `<lake.root>/<lake.reports>/<quality.reports_dir>/gx` (after quality.docs_volume_runs runs,
   the next volume's: `.../volume-<n>/gx`): validation results as JSON in its validations store,
   Data Docs (HTML) built once for the gate's suites; a remote lake is worked on in a local folder
   and copied back (quality/docs.py);
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

import contextlib
import importlib
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession

from pipelines import lake, stages
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.stages import ROW_ID
from quality import docs, gx_runner, outcomes
from quality.metrics import naming, quarantine_examples, row_frame, staged_quarantine, totals, totals_frame
from quality.outcomes import Outcome


class GateFailed(RuntimeError):
    """The batch failed its quality gate; nothing was published. The message lists the failed
    expectations, the report page and the Data Docs index."""


class UpstreamNotValidated(RuntimeError):
    """The layer a stage reads failed its last validation; the stage must not run on it."""


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
    stages.get(layer)  # an unknown layer fails here, not at the audit, and so does a bad setting:
    volume_runs = conf["quality.docs_volume_runs"]
    if volume_runs < 1:  # conf/base.yaml's type makes it an int
        raise ConfError(f"quality.docs_volume_runs is {volume_runs!r}: set 1 or more (runs per Data Docs volume)")
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

    One Delta append, no GX: success (nothing failed), no expectation evaluated, no report page and
    no Data Docs (report_path and docs_index empty: nothing under the reports folder is read, not
    even listed, which on S3 was one LIST per stage of a run with nothing new); `outcomes.latest`
    skips such rows, so the layer's last validation, passed or failed, still decides whether the
    next stage runs.
    """
    outcome = Outcome(
        layer=audit.layer, run_id=audit.run_id, success=True, validated_at=datetime.now(timezone.utc), batch_rows=0,
        evaluated_expectations=0, failed_expectations=[], metrics={}, report_path="", result_paths=[],
        docs_index="", context={**audit.notes, NOTHING_VALIDATED[0]: NOTHING_VALIDATED[1]},
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


def docs_index_location(spark: SparkSession, conf: Conf) -> str:
    """The Data Docs' front page of the newest volume (gx_runner.newest_volume), under the lake
    (Layout.quality_reports): the one the latest gates wrote to."""
    return gx_runner.index_page(gx_runner.newest_volume(spark, Layout.from_conf(conf).quality_reports))


def preload() -> None:
    """Import Great Expectations (quality/suites.py, ~3 s of Python) in a background thread, once per
    process: a stage that runs (its mark did not match) calls this before reading its tables, so
    the import runs while the driver waits on Spark instead of when the audit starts. An import
    error is raised again, in the stage's own thread, by the audit's own import."""
    global _preloading
    if _preloading is not None or "quality.suites" in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("quality.suites")

    _preloading = threading.Thread(target=load, name="gx-import", daemon=True)
    _preloading.start()


_preloading: threading.Thread | None = None


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
    staged_rejects = staged_quarantine(spark, layer, staged)
    facts = stage.model_facts(spark, conf, staged) if stage.suite.versioned else None
    metrics = totals(spark, conf, stage, batch, staged_rejects, facts)
    rate = metrics["batch_quarantine_rate"]
    over = rate is None or not rate <= conf[f"quality.{layer}.max_quarantine_rate"]  # NaN is over too
    quarantined = quarantine_examples(staged_rejects, conf["quality.unexpected_examples"]) if over else []
    # NaN and infinity become null, which each bounded column's not-null expectation fails (suites.py).
    rows = row_frame(suites.row_checks(layer, batch), metrics["batch_rows"], conf["quality.pandas_max_rows"])
    try:
        checks = [
            (suites.rows_suite(layer, conf, facts), rows, [ROW_ID]),
            (suites.totals_suite(layer, conf, facts, quarantined), suites.non_finite_as_null(totals_frame(metrics)), []),
        ]
        reports, volume_runs = Layout.from_conf(conf).quality_reports, conf["quality.docs_volume_runs"]
        suite_names = [suite.name for suite, _, _ in checks]
        with gx_runner.workspace(spark, reports, started, suite_names, volume_runs) as (local_root, to_lake):
            results = gx_runner.run_checkpoints(local_root, conf, run_id, validated_at, checks)
            docs.localise_site(local_root / gx_runner.GX_DIR / gx_runner.SITE_DIR, started - 1)
            docs_index = to_lake(gx_runner.index_page(str(local_root)))
            results = [
                gx_runner.SuiteResult(r.suite, r.success, r.evaluated, r.failures, to_lake(r.page), to_lake(r.result_json))
                for r in results
            ]
    finally:
        if isinstance(rows, DataFrame):
            rows.unpersist()
    failed = [r for r in results if not r.success]
    failures = [failure + naming(failure, quarantined) for r in results for failure in r.failures]
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
        docs_index=docs_index,
        context=context or {},
    )
    outcomes.record(spark, conf, outcome)
    return outcome
