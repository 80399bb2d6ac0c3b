"""Command-line options shared by every stage: `--conf FILE` (repeatable) and `--set key=value`."""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from pipelines import lake
from pipelines.config import Conf, ConfError, load_conf
from pipelines.session import build_spark_session
from quality import gates

DEFAULT_CONF = "conf/local.yaml"


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="FILE",
        help=f"conf overlay on top of conf/base.yaml, repeatable, later files win (default: {DEFAULT_CONF})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set lake.root=/tmp/lake (repeatable, applied last)",
    )
    return parser


def load_stage_conf(args: argparse.Namespace) -> Conf:
    """Conf from the parsed options; a conf problem ends the process with its message, not a trace."""
    try:
        return load_conf(args.conf or [DEFAULT_CONF], args.overrides)
    except ConfError as exc:
        sys.exit(f"conf error: {exc}")


def new_run_id(conf: Conf) -> str:
    """`run.id` from conf when given (to resume or tag a run), else UTC time plus a random suffix."""
    if conf["run.id"]:
        return conf["run.id"]
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


StageRun = Callable[..., dict]
_UNREACHABLE = re.compile(r"ConnectException|UnknownHostException|Unable to execute HTTP request|Connection refused")


def storage_unreachable(exc: BaseException) -> str | None:
    """The innermost line saying the lake's storage (an S3 endpoint) did not answer, or None for any
    other failure (a bug keeps its traceback)."""
    causes = [line.strip() for line in str(exc)[:200000].splitlines() if _UNREACHABLE.search(line)]
    return causes[-1][:300] if causes else None


def execute_stage(
    stage: str,
    args: argparse.Namespace,
    run: StageRun,
    summary: Callable[[dict, str], str],
    input_errors: tuple[type[BaseException], ...] = (FileNotFoundError,),
    context: Callable[[Conf], Mapping[str, object]] | None = None,
) -> tuple[int, dict | None]:
    """The body every stage's main() shares: conf, session, upstream check, run with its gate, summary.

    `run(spark, conf, run_id, audit)` does the stage's work. Exit codes: 0 done, 1 a quality gate
    failed or the upstream layer's last validation failed (nothing published), 2 missing input,
    weights or setting (the message says what to do), 3 the storage did not answer. Returns the stats for stage-specific advice.
    """
    conf = load_stage_conf(args)
    run_id = new_run_id(conf)
    spark = build_spark_session(conf, stage)
    try:
        gates.require_upstream_passed(spark, conf, stage)
        audit = gates.auditor(spark, conf, stage, run_id, context(conf) if context else None)
        stats = run(spark, conf, run_id, audit)
    except input_errors as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 2, None
    except (gates.GateFailed, gates.UpstreamNotValidated, lake.ConcurrentWriteError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1, None
    except Exception as exc:  # noqa: BLE001 - only an unreachable store is turned into one line
        cause = storage_unreachable(exc)
        if cause is None:
            raise
        print(
            f"{stage}: cannot reach the storage of {conf.path('lake.root')} (s3.endpoint={conf['s3.endpoint']}): "
            f"{cause}; run {run_id} stopped before its end: rerun when the storage answers again "
            "(a rerun publishes exactly what this one did not)",
            file=sys.stderr,
        )
        return 3, None
    print(summary(stats, run_id))
    return 0, stats
