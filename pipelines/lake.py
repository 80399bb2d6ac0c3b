"""The write-audit-publish protocol shared by every stage (the lake's locations: pipelines/layout.py).

A stage never appends to a published table directly. It writes its new batch to a staging Delta
table (`<lake.root>/<lake.staging>/<stage>/<run_id>`), reads it back, lets the audit (the quality
gate) validate exactly those rows, and only then publishes them with one Delta MERGE that inserts
the rows whose key is absent (a table the stage rewrites, gold's on a fit: one overwrite). A run
stages, audits and publishes all its tables together (write_audit_publish: the batch, its
quarantine rows, gold's model registry and variance rows), one commit each, in the order the stage
declares. Why this shape:

- atomic: each MERGE is a single Delta commit, so a killed run leaves nothing visible of a table
  it had not committed yet; the staging table is private: readers never see it, and a rerun with
  the same run id overwrites it;
- idempotent: inserting only absent keys makes a rerun, or a resume after a crash, exactly-once;
- concurrency-safe: two writers of the same table conflict in Delta's optimistic concurrency
  control (ConcurrentAppendException) instead of both inserting the same rows; the loser retries
  its insert-if-absent MERGE, which then skips what the winner inserted;
- the batch is computed once (staged), so the expensive transform is not recomputed by the audit
  and by the write.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.types import StructType

from pipelines import lakefs
from pipelines.config import Conf
from pipelines.layout import Layout


@dataclass(frozen=True)
class Batch:
    """One table of a write-audit-publish transaction: its rows and how they are published.

    With `keys`, the rows whose keys are absent from the table are inserted (exactly-once: a rerun
    inserts nothing twice); with `replace=True`, the rows become the whole table (gold's fit: every
    row gets a new model version, and insert-if-absent would mix old and new rows). Its place is
    the layout's for the table's name (pipelines/layout.py).

    `empty=True`: the caller knows the rows are none (counted on a frame it persisted, such as the
    rejections of a run that rejected nothing). Such a batch is not staged, read back nor merged
    (~2 s of fixed cost for nothing); the audit sees no rows for it, and the table is only created
    when absent, so every table a stage declares exists after its run, as an analyst expects.
    """

    rows: DataFrame
    keys: Sequence[str] = ()
    replace: bool = False
    empty: bool = False

    def __post_init__(self) -> None:
        if bool(self.keys) == self.replace:
            raise ValueError("a lake.Batch is inserted by its keys or replaced (replace=True): give exactly one of them")
        if self.empty and self.replace:
            raise ValueError("a replaced lake.Batch cannot be empty=True: replacing a table with no rows is a publish, not a skip")


@dataclass(frozen=True)
class Staged:
    """What an audit sees: every table of the transaction staged and read back, by name, `batch`
    being the stage's own table (`own`; the quarantine rows staged beside it, when any, are under
    "quarantine"). `table(name)` answers for the other tables too: the staged rows when this run
    staged that table, else the published table (a lake table; None: never published)."""

    tables: dict[str, DataFrame]
    own: str
    published: Callable[[str], DataFrame | None] = lambda name: None

    @property
    def batch(self) -> DataFrame:
        return self.tables[self.own]

    def table(self, name: str) -> DataFrame | None:
        staged = self.tables.get(name)
        return staged if staged is not None else self.published(name)


Audit = Callable[[Staged], None]

# Shared by every stage: one row per rejected (stage, path, image_id) with a reason.
QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), True),
        T.StructField("path", T.StringType(), True),
        T.StructField("stage", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("source_size_bytes", T.LongType(), True),
        T.StructField("source_modified_at", T.TimestampType(), True),
        T.StructField("run_id", T.StringType(), True),
        T.StructField("recorded_at", T.TimestampType(), True),
    ]
)
QUARANTINE_KEYS = ("stage", "path", "image_id")


def read_table(spark: SparkSession, location: str) -> DataFrame | None:
    """The Delta table at `location`, or None when no table was ever published there."""
    if not DeltaTable.isDeltaTable(spark, location):
        return None
    return spark.read.format("delta").load(location)


@dataclass(frozen=True)
class PublishResult:
    table: str
    staged_rows: int
    inserted_rows: int
    # Commit attempts it took: 1, or more when another run committed first and this one retried.
    attempts: int = 1


def stage_batch(spark: SparkSession, conf: Conf, stage: str, run_id: str, batch: DataFrame) -> DataFrame:
    """Materialise the batch once in this run's private staging table and return it read back."""
    location = Layout.from_conf(conf).staging(stage, run_id)
    batch.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(location)
    return spark.read.format("delta").load(location)


class ConcurrentWriteError(RuntimeError):
    """Another writer kept winning Delta's commit race for the same table; nothing was published."""


# The public base class of Delta's commit conflicts: ConcurrentAppendException,
# ConcurrentDeleteReadException, ConcurrentDeleteDeleteException, ConcurrentTransactionException,
# ConcurrentWriteException, MetadataChangedException, ProtocolChangedException (io.delta.exceptions).
# delta-spark's Python package names them in `delta.exceptions`, but the 4.0.0 wheel lacks that module
# (delta-io/delta#4755), and PySpark leaves JVM exceptions it does not know as py4j's Py4JJavaError:
# so the Java exception's class is checked, through its superclasses, never the message text.
_DELTA_CONFLICT_CLASS = "io.delta.exceptions.DeltaConcurrentModificationException"

# Seen while another process creates the same table: its `_delta_log` folder exists but version 0
# is not committed yet (TABLE_NOT_FOUND), or Delta read "no table" and then found the other run's
# files in the folder (CREATE_TABLE_WITH_NON_EMPTY_LOCATION). No exception type tells these apart
# (both are DeltaAnalysisException, raised in Python as AnalysisException): Spark's error condition,
# a stable identifier, does.
_HALF_CREATED_CONDITIONS = {"DELTA_TABLE_NOT_FOUND", "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION"}


def is_commit_conflict(exc: BaseException, creating: bool = False) -> bool:
    """True for Delta's optimistic-concurrency conflicts (another writer committed first).

    While this run creates a table, finding it half-created is one too (see _HALF_CREATED_CONDITIONS).
    """
    if isinstance(exc, Py4JJavaError) and _DELTA_CONFLICT_CLASS in _java_classes(exc.java_exception):
        return True
    return creating and isinstance(exc, PySparkException) and exc.getCondition() in _HALF_CREATED_CONDITIONS


def _java_classes(throwable) -> set[str]:
    """The class names of a JVM exception, its superclasses and those of its first causes (asked of the JVM)."""
    names: set[str] = set()
    for _ in range(8):  # a cause chain can loop; a conflict is the exception itself or close below it
        if throwable is None:
            break
        java_class = throwable.getClass()
        while java_class is not None:
            names.add(java_class.getName())
            java_class = java_class.getSuperclass()
        throwable = throwable.getCause()
    return names


def publish(
    spark: SparkSession, staged: DataFrame, location: str, keys: Sequence[str], attempts: int = 5
) -> PublishResult:
    """Insert the staged rows whose `keys` are absent from the table at `location`, in one commit.

    When another run of the stage commits to the same table first, Delta rejects this commit
    (optimistic concurrency); the MERGE is then simply retried: it re-reads the table, so rows the
    other run already inserted are not inserted twice. This run waits its turn instead of failing.
    """
    staged_rows = staged.count()
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)

    def merge() -> PublishResult:
        if staged_rows == 0:
            return PublishResult(location, 0, 0)
        table = DeltaTable.forPath(spark, location)
        merged = table.alias("t").merge(staged.alias("s"), condition).whenNotMatchedInsertAll().execute()
        return PublishResult(location, staged_rows, int(merged.first()["num_inserted_rows"]))

    return _commit_retrying_conflicts(spark, staged.schema, location, merge, attempts)


def overwrite(spark: SparkSession, staged: DataFrame, location: str, attempts: int = 5) -> PublishResult:
    """Replace every row of the table at `location` with the staged rows, in one commit.

    Two runs overwriting the same table at once (two first fits of gold) conflict in Delta's
    optimistic concurrency, above all while both create the table; the loser retries and overwrites
    again, so the table ends holding exactly one run's rows, never a mix or a failed run.
    """
    staged_rows = staged.count()

    def replace() -> PublishResult:
        staged.write.format("delta").mode("overwrite").save(location)
        return PublishResult(location, staged_rows, staged_rows)

    return _commit_retrying_conflicts(spark, staged.schema, location, replace, attempts)


def _commit_retrying_conflicts(
    spark: SparkSession, schema: StructType, location: str, commit: Callable[[], PublishResult], attempts: int
) -> PublishResult:
    """Create the table at `location` if absent, then run `commit`; retry both on commit conflicts."""
    attempt = 1
    while True:
        creating = True
        try:
            DeltaTable.createIfNotExists(spark).location(location).addColumns(schema).execute()
            creating = False
            return replace(commit(), attempts=attempt)
        except Exception as exc:  # noqa: BLE001 - only commit conflicts are retried
            if not is_commit_conflict(exc, creating):
                raise
            if attempt >= attempts:
                if is_commit_conflict(exc):
                    raise ConcurrentWriteError(
                        f"{location}: another run kept committing to this table first ({attempts} attempts); "
                        f"nothing of this run was published to it: rerun the stage when the other run is done"
                    ) from exc
                raise ConcurrentWriteError(
                    f"{location}: still not a Delta table after {attempts} attempts to create it, and another "
                    f"run creating it would have finished: if no other run is active, the folder holds something "
                    f"else (look inside, move it away) and rerun the stage"
                ) from exc
            print(f"{location}: a concurrent run committed first; retrying ({attempt}/{attempts - 1})")
            wait_before_retry(attempt * random.uniform(0.5, 1.5))
            attempt += 1


def wait_before_retry(seconds: float) -> None:
    """The pause between two commit attempts (its own function: tests replace it, not time.sleep)."""
    time.sleep(seconds)


# Fault point for the reliability tests (and for anyone reproducing a crash): set to a table name,
# write_audit_publish stops right after that table's commit. "<table>" or "<table>:stop": the
# process sends itself SIGSTOP (frozen exactly there, to be killed from outside); "<table>:raise":
# it raises InjectedFault. Unset in normal runs.
FAULT_AFTER_PUBLISH_ENV = "FRUITS_FAULT_AFTER_PUBLISH"


class InjectedFault(RuntimeError):
    """Raised at the fault point FRUITS_FAULT_AFTER_PUBLISH=<table>:raise."""


def _fault_point(table: str) -> None:
    wanted, _, action = os.environ.get(FAULT_AFTER_PUBLISH_ENV, "").partition(":")
    if wanted != table:
        return
    if action == "raise":
        raise InjectedFault(f"{FAULT_AFTER_PUBLISH_ENV}={wanted}:raise: stopped after publishing {table}")
    if action not in ("", "stop"):
        raise ValueError(f"{FAULT_AFTER_PUBLISH_ENV}: unknown action {action!r} (stop or raise): unset it for a normal run")
    print(f"{FAULT_AFTER_PUBLISH_ENV}={wanted}: {table} published, process {os.getpid()} stops here", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


def write_audit_publish(
    spark: SparkSession,
    conf: Conf,
    stage: str,
    run_id: str,
    batches: Mapping[str, Batch],
    audit: Audit | None = None,
) -> dict[str, PublishResult]:
    """Stage every batch (table name -> Batch), audit them, then publish each in the order the
    caller declared them (the mapping's order).

    Every declared table costs a staging write, a read back and a commit (about 2 s each on a
    small batch, whatever its size), except a batch declared `empty` (Batch): bronze, silver and
    gold declare their rejections so when the run rejected nothing.

    `audit` gets every staged table (Staged) and validates the stage's own one, the table named
    like `stage`. If the audit raises, nothing is published: no table of the transaction has a
    commit. Each table is then published in its own commit, inserted or replaced as its Batch says.

    Order: the commits are not one transaction, so a run killed between two of them leaves the
    first published and the rest not; the caller orders them so that each such prefix is a lake
    the next run completes, never one holding rows whose dependencies are missing.
    - Inserted (bronze, silver, gold's increment, the classifier's scoring): the quarantine rows
      first, the stage's own table last. A kill in between leaves only quarantine rows, which the
      rerun skips, instead of accepted rows whose rejects never land (the rerun's batch would be
      the rejects alone, refused by the gate's quarantine rate).
    - Replaced (gold's fit): first what the new rows name, inserted by their keys (gold's registry
      row, then its variance rows: alone they are harmless, since only the gold rows name their
      model version, and the registry row is what makes a saved model usable), then the replaced
      table, then its rejections. Rejections committed before the replace would contradict the
      rows of the old table (an image both a row and a quarantine row), while rejections lost by a
      kill after it are found again by the next run. A kill therefore never leaves a gold row whose
      model, registry row or variance rows are missing. (The classifier's retrain declares its
      replaced rows before its metrics row: a kill in between leaves rows without their metrics
      row, which its next run reads as no model and retrains: classifier.current_metrics.)

    Fault point: with the environment variable FRUITS_FAULT_AFTER_PUBLISH=<table> the process stops
    (SIGSTOP) right after that table's commit, before the next publish; `<table>:raise` raises
    InjectedFault there instead. The reliability tests use it to kill a run between two of its
    publishes deterministically; it works for every table of the transaction.
    """
    staged = {
        table: replace(
            batch,
            rows=spark.createDataFrame([], batch.rows.schema) if batch.empty
            else stage_batch(spark, conf, f"{stage}/{table}", run_id, batch.rows),
        )
        for table, batch in batches.items()
    }
    layout = Layout.from_conf(conf)
    if audit is not None:
        if stage not in staged:
            raise ValueError(f"{stage}: the audit validates the stage's own table, and this run staged none ({list(staged)})")
        audit(Staged(
            {table: batch.rows for table, batch in staged.items()}, stage,
            lambda table: layout.read(spark, table),
        ))
    results = {}
    for table, batch in staged.items():
        location = layout.location(table)
        if batch.empty:
            results[table] = create_if_absent(spark, batch.rows.schema, location)
        elif batch.replace:
            results[table] = overwrite(spark, batch.rows, location)
        else:
            results[table] = publish(spark, batch.rows, location, batch.keys)
        _fault_point(table)
    for table, batch in staged.items():
        if not batch.empty:
            drop_staging(spark, conf, f"{stage}/{table}", run_id)
    return results


def create_if_absent(spark: SparkSession, schema: StructType, location: str) -> PublishResult:
    """An empty batch's publish: no commit when the table exists, its creation (empty) when not,
    with every column nullable, as a staged batch read back from Delta creates it."""
    if DeltaTable.isDeltaTable(spark, location):
        return PublishResult(location, 0, 0)
    nullable = StructType([field.__class__(field.name, field.dataType, True, field.metadata) for field in schema])
    return _commit_retrying_conflicts(spark, nullable, location, lambda: PublishResult(location, 0, 0), attempts=5)


def drop_staging(spark: SparkSession, conf: Conf, stage: str, run_id: str) -> None:
    """Delete this run's staging table of `stage` (through Hadoop's FileSystem: local disk or S3A alike).

    Refuses any location that is not strictly below `<lake.root>/<lake.staging>/`: a recursive
    delete must never reach outside the lake, whatever the run id or the conf say.
    """
    layout = Layout.from_conf(conf)
    location = layout.staging(stage, run_id)
    root = layout.root + "/"
    staging = conf["lake.staging"].strip("/").split("/")
    inside = location[len(root):].split("/") if location.startswith(root) else []
    if inside[: len(staging)] != staging or len(inside) <= len(staging) or {".", ".."} & set(inside):
        raise ValueError(f"refusing to delete '{location}': it is not a staging folder under '{root}{conf['lake.staging']}'")
    lakefs.delete(spark, location, inside=layout.staging_root)


def check_root(spark: SparkSession, conf: Conf) -> None:
    """Raise NotADirectoryError when `lake.root` exists but is a file (before any input is read)."""
    root = conf.path("lake.root")
    if lakefs.is_file(spark, root):
        raise NotADirectoryError(f"lake.root '{root}' is a file, not a folder: set lake.root to a folder (new or a lake)")


def latest_commit(spark: SparkSession, location: str) -> list[int] | None:
    """[version, modification time in ms] of the newest commit file in the `_delta_log` of the table
    at `location`, or None when it has none: one folder listing, no log replay (pipelines/marks.py)."""
    log = f"{location}/_delta_log"
    local = lakefs.local_path(log)
    if local is not None:
        try:
            entries = [(e.name, e.stat().st_mtime_ns // 1_000_000) for e in os.scandir(local)]
        except FileNotFoundError:
            return None
    else:
        entries = [(e.name, e.modified_ms) for e in lakefs.children(spark, log)]
    commits = [(int(name[:-5]), modified) for name, modified in entries if name.endswith(".json") and name[:-5].isdigit()]
    return list(max(commits)) if commits else None


def commit_user_metadata(spark: SparkSession, location: str, version: int) -> str | None:
    """The `userMetadata` of commit `version` of the table at `location` (None: none, or no such commit)."""
    raw = lakefs.read_small_file(spark, f"{location}/_delta_log/{version:020d}.json")
    for line in (raw or b"").decode("utf-8", "replace").splitlines():
        if '"commitInfo"' in line:
            return json.loads(line)["commitInfo"].get("userMetadata")
    return None
