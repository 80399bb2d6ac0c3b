"""Print the end of the gzipped log files EMR and EMR Serverless leave in the bucket's logs prefix."""

from __future__ import annotations

import gzip

from deploy.executor import Executor
from deploy.settings import Settings


def print_tail(ex: Executor, s: Settings, key: str, lines: int) -> None:
    """The last `lines` lines of one log object, or a note when it is not there (yet)."""
    if ex.dry_run:
        ex.call("s3", "get_object", Bucket=s.bucket, Key=key)
        return
    response = ex.call("s3", "get_object", tolerate=("NoSuchKey",), Bucket=s.bucket, Key=key)
    if response is None:
        ex.say(f"--- {s.uri(key)}: not there (EMR uploads logs a few minutes after they are written)")
        return
    body = response["Body"].read()
    text = gzip.decompress(body).decode("utf-8", errors="replace") if key.endswith(".gz") else body.decode()
    tail = text.splitlines()[-lines:]
    ex.say(f"--- {s.uri(key)} (last {len(tail)} lines)")
    for line in tail:
        ex.say(line)
