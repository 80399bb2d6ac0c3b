"""Stage marks: a stage whose inputs have not changed since its last complete run does nothing.

Why: with nothing new, a stage still read its input and output tables (in a fresh JVM each Delta
table's first read replays its log), joined them to find no new row, and gold recounted its rows
and compared its exports with them: most of a no-op run's seconds (docs/benchmarks.md, "Where a
run's seconds go"). A Delta table changes only by a commit, and each commit adds the next numbered
file to the table's `_delta_log` folder, so one listing per table says whether anything changed.

A stage's mark, `<lake.root>/<lake.marks>/<stage>.json`, holds the state of the lake its last
complete run left: the latest commit (version and time) of every table the stage reads (its
declared `reads` in pipelines/stages.py, its own tables included), a hash of the conf and, for the stage reading the input folder (bronze), a
fingerprint of that folder's files (path, size, modification time). The next run compares first:
all equal, it prints one line and stops, having read no table (the runner still records, in the
outcome table, that it ran with nothing to validate). Any difference, a missing or unreadable
mark, `--refit`/`--retrain` (`force`), or `run.skip_unchanged: false` means the full run, which
finds what is new by itself: a mark can make a run skip nothing that a full run would do.

What goes into a mark after a run: for each table, the commit the run read (taken before the run),
or the latest one when every commit since is this run's own. A run tags its commits with its stage
and run id (Delta's commit `userMetadata`, shown by DESCRIBE HISTORY), so a commit made by another
process meanwhile (a stage started alone beside the chain) is never taken as seen: the next run
looks again. A run that failed, or was killed, writes no mark.

What a mark trusts: that the lake changes only by commits. A file removed by hand (an export part,
a model folder) is put back by the next run that has something new, or at once with
`--set run.skip_unchanged=false`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from pyspark.sql import SparkSession

from pipelines import lake, lakefs, stages
from pipelines.config import Conf, resolve_location
from pipelines.layout import Layout

USER_METADATA_KEY = "spark.databricks.delta.commitInfo.userMetadata"
Result = TypeVar("Result")


@dataclass(frozen=True)
class Unchanged:
    """The result of a stage run that found its mark matching and did nothing (no table read)."""

    unchanged_since: str | None  # run id of the complete run that wrote the matching mark
    marked_at: str | None  # when that mark was written (UTC, ISO 8601, seconds)
    seconds: float  # seconds spent listing the tables and comparing them with the mark


@dataclass(frozen=True)
class LakeState:
    """What a stage's result depends on, as a plain dict (the mark's JSON): tables, conf, input."""

    tables: dict[str, list[int] | None]
    conf: str
    input: str | None

    def as_dict(self) -> dict:
        return {"tables": self.tables, "conf": self.conf, "input": self.input}


def tracked_tables(conf: Conf, stage: str) -> dict[str, str]:
    """The tables the stage's result depends on (its declared `reads`), by name, with their locations.
    The outcome table is not one: every run appends to it, and the gates read it themselves (the
    upstream check runs before the marks)."""
    layout = Layout.from_conf(conf)
    return {name: layout.location(name) for name in stages.get(stage).reads}


def conf_hash(conf: Conf) -> str:
    """sha256 of the resolved conf, less `run.id` (which names a run, not what it computes), with
    every local path made absolute: `${KERAS_HOME:-work/keras}` reads `work/keras` before silver
    exports KERAS_HOME as the absolute folder and that folder after, the same place."""
    data = conf.as_dict()
    data.get("run", {}).pop("id", None)
    return hashlib.sha256(json.dumps(_located(data), sort_keys=True, default=str).encode()).hexdigest()


def _located(value):
    if isinstance(value, dict):
        return {key: _located(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_located(item) for item in value]
    if isinstance(value, str) and "/" in value and "://" not in value:
        return resolve_location(value)
    return value


def input_fingerprint(spark: SparkSession, root: str) -> str | None:
    """Count and sha256 of (relative path, size, modification time) of every file under `root`,
    hidden ones included; None when the folder cannot be listed (the full run then says why)."""
    try:
        files = sorted(lakefs.list_files(spark, root))
    except OSError:
        return None
    digest = hashlib.sha256()
    for path, size, modified in files:
        digest.update(f"{path}\t{size}\t{modified}\n".encode())
    return f"{len(files)}:{digest.hexdigest()}"


def lake_state(spark: SparkSession, conf: Conf, stage: str) -> LakeState:
    """The state `stage` depends on now: one `_delta_log` listing per tracked table, the conf hash,
    and the input folder's fingerprint when the stage reads the input folder."""
    tables = {name: lake.latest_commit(spark, location) for name, location in tracked_tables(conf, stage).items()}
    reads_input = stages.get(stage).upstream is None
    return LakeState(tables, conf_hash(conf), input_fingerprint(spark, conf.path("input.path")) if reads_input else None)


def read_mark(spark: SparkSession, conf: Conf, stage: str) -> dict | None:
    """The stage's mark, or None when absent or unreadable (a torn write: the full run rewrites it)."""
    raw = lakefs.read_small_file(spark, Layout.from_conf(conf).mark(stage))
    if raw is None:
        return None
    try:
        mark = json.loads(raw)
        return mark if isinstance(mark, dict) and isinstance(mark.get("state"), dict) else None
    except ValueError:
        return None


def commit_tag(stage: str, run_id: str) -> str:
    """The `userMetadata` of every commit of a stage's run."""
    return f"fruits {stage} run {run_id}"


def state_after(spark: SparkSession, conf: Conf, stage: str, before: LakeState, tag: str) -> LakeState:
    """The state a run that started at `before` has seen: per table, the latest commit when every
    commit since `before` carries this run's tag, else the commit `before` holds. The conf and the
    input are those of `before` (files arriving during the run are new to the next one)."""
    tables = {}
    for name, location in tracked_tables(conf, stage).items():
        seen, latest = before.tables.get(name), lake.latest_commit(spark, location)
        first = 0 if seen is None else seen[0] + 1
        own = latest is not None and all(
            lake.commit_user_metadata(spark, location, version) == tag for version in range(first, latest[0] + 1)
        )
        tables[name] = latest if own else seen
    return LakeState(tables, before.conf, before.input)


def write_mark(spark: SparkSession, conf: Conf, stage: str, run_id: str, state: LakeState) -> None:
    mark = {"stage": stage, "run_id": run_id, "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "state": state.as_dict()}
    with tempfile.TemporaryDirectory(prefix="fruits-mark-") as scratch:
        local = Path(scratch) / f"{stage}.json"
        local.write_text(json.dumps(mark, indent=1), encoding="utf-8")
        lakefs.put_file(spark, local, Layout.from_conf(conf).mark(stage))


def run_unless_unchanged(
    spark: SparkSession, conf: Conf, stage: str, run_id: str, run: Callable[[], Result], force: bool = False
) -> Result | Unchanged:
    """`run()`'s result, or, when the lake, the conf and the input match the stage's mark, the
    Unchanged result of a run that did nothing (the mark's run id and time, the seconds compared).

    After a complete run the mark is rewritten (see state_after); `run` tags its commits with
    commit_tag while it runs.
    """
    started = time.monotonic()
    before = lake_state(spark, conf, stage) if conf["run.skip_unchanged"] else None
    listed = before is not None and (before.input is not None or stages.get(stage).upstream is not None)
    if listed and not force:
        mark = read_mark(spark, conf, stage)
        if mark is not None and mark["state"] == before.as_dict():
            return Unchanged(mark.get("run_id"), mark.get("written_at"), round(time.monotonic() - started, 1))
    tag = commit_tag(stage, run_id)
    previous = spark.conf.get(USER_METADATA_KEY, None)
    spark.conf.set(USER_METADATA_KEY, tag)
    try:
        result = run()
    finally:
        if previous is None:
            spark.conf.unset(USER_METADATA_KEY)
        else:
            spark.conf.set(USER_METADATA_KEY, previous)
    if before is not None:
        write_mark(spark, conf, stage, run_id, state_after(spark, conf, stage, before, tag))
    return result


def unchanged(result: object) -> bool:
    """True for the result of a run that skipped (its mark matched), False for a stage's own result."""
    return isinstance(result, Unchanged)


def summary_line(stage: str, result: Unchanged, run_id: str) -> str:
    declared = stages.get(stage)
    inputs = ", ".join(declared.reads) + (", the input folder" if declared.upstream is None else "")
    return (
        f"{stage} run {run_id}: nothing new since run {result.unchanged_since} ({result.marked_at}): {inputs} and "
        f"the conf are as that run left them; nothing read or written, {result.seconds} s"
    )
