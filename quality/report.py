"""Print the latest quality-gate result of each layer and where the Data Docs are.

`python -m quality.report [--conf FILE] [--set key=value]`: for bronze, silver and gold, whether the
last validated batch passed, its counts, its failed expectations and its report page, then the
path of the Data Docs index (open it in a browser; it renders offline).
"""

from __future__ import annotations

import sys

from pipelines.options import load_stage_conf, stage_parser
from pipelines.session import build_spark_session
from quality import gates, outcomes
from pipelines.stages import names
from quality.outcomes import Outcome


def format_report(
    latest: dict[str, Outcome], docs_index: str, lake_root: str, last_runs: dict[str, Outcome] | None = None
) -> str:
    """The text the command prints (pure: outcomes in, text out).

    `latest`: each layer's last validation; `last_runs`: each layer's last outcome row, a run that
    validated nothing when it is not a validation (said on a line of its own, after the validation).
    """
    lines = [f"Quality gates of the lake {lake_root}"]
    width = max(len(layer) for layer in names())  # layer names in one column, details indented past it
    indent = " " * (width + 1)
    for layer in names():
        outcome = latest.get(layer)
        if outcome is None:
            lines.append(f"{layer:<{width}} NOT VALIDATED  no gate has run on this layer yet")
        else:
            status = "PASSED" if outcome.success else "FAILED"
            failed = len(outcome.failed_expectations)
            lines.append(
                f"{layer:<{width}} {status:<14} run {outcome.run_id} at {outcome.validated_at:%Y-%m-%d %H:%M:%S} UTC: "
                f"{outcome.batch_rows} rows in the batch, {outcome.evaluated_expectations - failed}/"
                f"{outcome.evaluated_expectations} expectations met"
            )
            lines.append(indent + "counts: " + ", ".join(f"{k}={_number(v)}" for k, v in sorted(outcome.metrics.items())))
            if outcome.context:
                lines.append(indent + "context: " + ", ".join(f"{k}={v}" for k, v in sorted(outcome.context.items())))
            lines += [f"{indent}failed: {failure}" for failure in outcome.failed_expectations]
            lines.append(f"{indent}report: {outcome.report_path}")
            if outcome.docs_index and outcome.docs_index != docs_index:  # validated in an earlier Data Docs volume
                lines.append(f"{indent}in the Data Docs of {outcome.docs_index}")
        last = (last_runs or {}).get(layer)
        if last is not None and not last.validated:
            lines.append(
                f"{indent}last run: {last.run_id} at {last.validated_at:%Y-%m-%d %H:%M:%S} UTC had no batch to validate "
                "(nothing new)"
            )
    lines.append(f"Data Docs: {docs_index}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    conf = load_stage_conf(args)
    spark = build_spark_session(conf, "quality-report")
    validations, last_runs = outcomes.latest_runs(spark, conf)  # one read of the outcome table
    print(format_report(validations, gates.docs_index_location(spark, conf), conf.path("lake.root"), last_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
