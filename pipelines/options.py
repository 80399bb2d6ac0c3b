"""Command-line options every command shares, and the conf they load: `--conf FILE` (repeatable) and
`--set key=value`; the exit code of a user's mistake; the run id.

Below quality in the package order: the stages' runner (pipelines/cli.py, which runs the gates),
the reports and the bench all read their options here, so nothing here imports quality.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from datetime import datetime, timezone

from pipelines.config import Conf, ConfError, load_conf

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


# Exit status of a conf or input problem the user must fix (execute_stage lists every code).
EXIT_INPUT = 2


def load_stage_conf(args: argparse.Namespace) -> Conf:
    """Conf from the parsed options; a conf problem ends the process (exit 2) with its message, not a trace."""
    try:
        return load_conf(args.conf or [DEFAULT_CONF], args.overrides)
    except ConfError as exc:
        print(f"conf error: {exc}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


# Scheduler ids (Airflow's `scheduled__2026-12-01T00:00:00+00:00`, a UTC stamp) fit; a path does not.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}")


def new_run_id(conf: Conf) -> str:
    """`run.id` from conf when given (to resume or tag a run), else UTC time plus a random suffix.

    The run id names this run's staging folders under the lake, which the run deletes at its end:
    a given one must be a plain name (letters, digits, `_ . : + -`, at most 128, no `..`), never a path.
    """
    run_id = conf["run.id"]
    if not run_id:
        return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfError(
            f"run.id {run_id!r} is not a plain name: use letters, digits and _ . : + - (at most 128, starting "
            f"with a letter or digit, no '..'), e.g. scheduled__2026-12-01T00:00:00+00:00, or leave it empty"
        )
    return run_id
