"""The body every stage's main() shares (`execute_stage`): conf, session, upstream check, the stage's
mark, its run behind its gate, summary line, exit code; and how a failure becomes one line.

Above quality in the package order (it runs the gates); the options themselves are in
pipelines/options.py, which the reports and the bench read without this module.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pipelines import lake, marks
from pipelines.config import Conf, ConfError
from pipelines.options import EXIT_INPUT, load_stage_conf, new_run_id
from pipelines.session import build_spark_session
from quality import gates

# A stage's own result type (bronze.BronzeResult, silver.SilverResult, ...).
Result = TypeVar("Result")
_UNREACHABLE = re.compile(r"ConnectException|UnknownHostException|Unable to execute HTTP request|Connection refused")


def storage_unreachable(exc: BaseException) -> str | None:
    """The innermost line saying the lake's storage (an S3 endpoint) did not answer, or None for any
    other failure (a bug keeps its traceback)."""
    causes = [line.strip() for line in str(exc)[:200000].splitlines() if _UNREACHABLE.search(line)]
    return causes[-1][:300] if causes else None


_UNREADABLE_FILE = re.compile(r"\[FAILED_READ_FILE\.\w+\] Encountered error while reading file (\S+?)\.?\s")
_CAUSE = re.compile(r"^Caused by: (?:[\w.$]+\.)?(\w+(?:Exception|Error)): (.*)$", re.MULTILINE)


def damaged_lake_file(exc: BaseException, lake_root: str) -> str | None:
    """'<file>: <innermost cause>' when a file of the lake itself (a data file or a Delta log entry)
    is missing or unreadable, else None (an input file or any other failure keeps its own handling)."""
    text = str(exc)[:200000]
    match = _UNREADABLE_FILE.search(text)
    if match is None:
        return None
    file = unquote(match.group(1))  # Spark quotes the path as a URI (file:///My%20Lake/...)
    if file.startswith("file:"):
        file = urlparse(file).path
    if not file.startswith(lake_root.rstrip("/") + "/"):
        return None
    causes = _CAUSE.findall(text)
    detail = f"{causes[-1][0]}: {causes[-1][1][:200]}" if causes else "unreadable"
    return f"{file}: {detail}"


# Problems the user fixes (a setting, an input folder, the lake's place): one line, exit 2.
INPUT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, PermissionError, ConfError)


def execute_stage(
    stage: str,
    args: argparse.Namespace,
    run: Callable[..., Result],
    summary: Callable[[Result, str], str],
    input_errors: tuple[type[BaseException], ...] = (),
    context: Callable[[Conf], Mapping[str, object]] | None = None,
    force: bool = False,
) -> tuple[int, Result | marks.Unchanged | None]:
    """The body every stage's main() shares: conf, session, upstream check, run with its gate, summary.

    `run(spark, conf, run_id, audit)` does the stage's work, unless the lake, the conf and the input
    are as the stage's last complete run left them (pipelines/marks.py; `force`, e.g. gold's
    --refit, runs it anyway); a run that never calls `audit` (nothing new) leaves one outcome row
    saying so (gates.record_unvalidated). Exit codes: 0 done, 1 a quality gate
    failed or the upstream layer's last validation failed (nothing published), 2 missing or bad
    input, weights, setting or lake file (INPUT_ERRORS plus the stage's `input_errors`; the message
    says what to do), 3 the storage did not answer. Returns the run's result (the stage's own, or
    marks.Unchanged when it skipped; None when it failed) for stage-specific advice.
    """
    conf = load_stage_conf(args)
    try:
        run_id = new_run_id(conf)
        spark = build_spark_session(conf, stage)  # reads lake.root: an empty one stops here
    except ConfError as exc:
        print(f"conf error: {exc}", file=sys.stderr)
        return EXIT_INPUT, None
    try:
        lake.check_root(spark, conf)
        gates.require_upstream_passed(spark, conf, stage)
        audit = gates.auditor(spark, conf, stage, run_id, context(conf) if context else None)
        def run_stage() -> Result:
            gates.preload()  # the audit's Great Expectations import, while the stage reads its tables
            return run(spark, conf, run_id, audit)

        result = marks.run_unless_unchanged(spark, conf, stage, run_id, run_stage, force)
        if not audit.called:  # nothing new: the run is recorded, nothing is validated
            gates.record_unvalidated(spark, conf, audit)
    except (*INPUT_ERRORS, *input_errors) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return EXIT_INPUT, None
    except (gates.GateFailed, gates.UpstreamNotValidated, lake.ConcurrentWriteError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1, None
    except Exception as exc:  # noqa: BLE001 - only an unreachable store or a damaged lake file is turned into one line
        cause = storage_unreachable(exc)  # first: a read cut by an outage is no damaged file
        damaged = damaged_lake_file(exc, conf.path("lake.root")) if cause is None else None
        if damaged is not None:
            print(
                f"{stage}: the lake under {conf.path('lake.root')} is damaged, run {run_id} stopped before its end: "
                f"{damaged}; put the file back from a backup, or roll the table back to a version that does not "
                "need it (docs/reliability.md, 'Damaged lake'), then rerun",
                file=sys.stderr,
            )
            return EXIT_INPUT, None
        if cause is None:
            raise
        print(
            f"{stage}: cannot reach the storage of {conf.path('lake.root')} (s3.endpoint={conf['s3.endpoint']}): "
            f"{cause}; run {run_id} stopped before its end: rerun when the storage answers again "
            "(a rerun publishes exactly what this one did not)",
            file=sys.stderr,
        )
        return 3, None
    print(marks.summary_line(stage, result, run_id) if marks.unchanged(result) else summary(result, run_id))
    return 0, result
