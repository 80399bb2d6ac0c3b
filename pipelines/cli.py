"""Command-line options shared by every stage: `--conf FILE` (repeatable) and `--set key=value`."""

from __future__ import annotations

import argparse
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
