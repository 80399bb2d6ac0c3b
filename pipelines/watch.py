"""`python -m pipelines.run --watch FOLDER`: the chain runs when new images have settled in FOLDER.

Why polling and settling: an upload of many photos arrives as a burst of files, each written over
some time. The watcher lists the input every `watch.poll_seconds`; once the listing (paths, sizes,
modification times of the image files) differs from the one of the last run and then stays the
same for `watch.settle_seconds`, it runs the chain once for the whole burst. Files arriving during
a run make a change seen after it: the next run takes them. Each run takes the lake's writer lock
(pipelines/lock.py): while a maintenance or an erasure holds it, the watcher retries at the next
poll. On start, images already in FOLDER that the lake has not seen are taken by a first run
(bronze skips what it already has, so a restart costs one cheap run).

Ctrl-C or TERM: the watcher stops after the current run (each stage's commit is atomic anyway); a
second Ctrl-C stops at once. The exit status is 0 after a clean stop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from pyspark.sql import SparkSession

from pipelines import lakefs
from pipelines.config import Conf, is_remote

Listing = dict[str, tuple[int, int]]
# Exit codes after which the same input is not run again until it changes: done, gate failed,
# input problem. 3 (storage unreachable) and a busy lake are retried at the next poll.
SETTLED_CODES = (0, 1, 2)


def listing(spark: SparkSession, conf: Conf) -> Listing:
    """Image files under input.path: relative path -> (size, modification time in ms)."""
    root = conf.path("input.path")
    extensions = tuple(f".{e.lower()}" for e in conf["input.extensions"])
    found: Listing = {}
    if is_remote(root):
        for entry in lakefs.files(spark, root):
            if entry.location.lower().endswith(extensions):
                found[entry.location[len(root):]] = (entry.size, entry.modified_ms)
        return found
    for folder, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(extensions):
                full = os.path.join(folder, name)
                try:
                    stat = os.stat(full)
                except FileNotFoundError:  # removed while listed
                    continue
                found[os.path.relpath(full, root)] = (stat.st_size, stat.st_mtime_ns // 1_000_000)
    return found


def watch(
    spark: SparkSession,
    conf: Conf,
    run_chain: Callable[[], int],
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `run_chain` whenever the input changed and then settled; until `stop` (set by Ctrl-C/TERM)."""
    stop = stop or _stop_on_signals()
    settle, poll = conf["watch.settle_seconds"], conf["watch.poll_seconds"]
    print(f"watch: {conf.path('input.path')} every {poll:g} s, a run once changes settle for {settle:g} s; Ctrl-C stops", flush=True)
    processed: Listing | None = None
    last: Listing | None = None
    changed_at = clock()
    while not stop.is_set():
        current = listing(spark, conf)
        if current != last:
            last, changed_at = current, clock()
        elif current and current != processed and clock() - changed_at >= settle:
            print(f"watch: {len(current)} image file(s) settled, {_new(current, processed)} new or changed: running the chain", flush=True)
            code = run_chain()
            if code in SETTLED_CODES:
                processed = current
            print(f"watch: run ended with exit {code}; watching again", flush=True)
        stop.wait(poll)
    print("watch: stopped", flush=True)
    return 0


def _new(current: Listing, processed: Listing | None) -> int:
    return sum(1 for path, state in current.items() if (processed or {}).get(path) != state)


def _stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT or SIGTERM; a second SIGINT raises KeyboardInterrupt as usual."""
    stop = threading.Event()

    def request_stop(signum, frame):
        print(f"watch: {signal.Signals(signum).name} received, stopping after the current run (Ctrl-C again: at once)", flush=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop
