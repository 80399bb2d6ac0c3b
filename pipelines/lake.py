"""Lake layout and the write-audit-publish protocol shared by every stage.

A stage never appends to a published table directly. It writes its new batch to a staging Delta
table (`<lake.root>/<lake.staging>/<stage>/<run_id>`), reads it back, lets the audit (the quality
gate) validate exactly those rows, and only then publishes them with one Delta MERGE that inserts
the rows whose key is absent. Why this shape:

- atomic: the MERGE is a single Delta commit, so a killed run leaves nothing visible; the staging
  table is private: readers never see it, and a rerun with the same run id overwrites it;
- idempotent: inserting only absent keys makes a rerun, or a resume after a crash, exactly-once;
- concurrency-safe: two writers of the same table conflict in Delta's optimistic concurrency
  control (ConcurrentAppendException) instead of both inserting the same rows;
- the batch is computed once (staged), so the expensive transform is not recomputed by the audit
  and by the write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.types import StructType

from pipelines.config import Conf

Audit = Callable[[DataFrame], None]

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


def lake_location(conf: Conf, *parts: str) -> str:
    """`lake.root` joined with sub-paths (works for local folders and s3a:// URIs alike)."""
    return "/".join([conf.path("lake.root"), *(p.strip("/") for p in parts if p)])


def table_location(conf: Conf, table: str) -> str:
    """Location of a lake table named in `lake.tables` (bronze, silver, gold, quarantine, ...)."""
    return lake_location(conf, conf[f"lake.tables.{table}"])


def read_table(spark: SparkSession, location: str) -> DataFrame | None:
    """The Delta table at `location`, or None when no table was ever published there."""
    if not DeltaTable.isDeltaTable(spark, location):
        return None
    return spark.read.format("delta").load(location)


def read_table_or_empty(spark: SparkSession, location: str, schema: StructType) -> DataFrame:
    table = read_table(spark, location)
    return table if table is not None else spark.createDataFrame([], schema)


@dataclass(frozen=True)
class PublishResult:
    table: str
    staged_rows: int
    inserted_rows: int


def stage_batch(spark: SparkSession, conf: Conf, stage: str, run_id: str, batch: DataFrame) -> DataFrame:
    """Materialise the batch once in this run's private staging table and return it read back."""
    location = staging_location(conf, stage, run_id)
    batch.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(location)
    return spark.read.format("delta").load(location)


def staging_location(conf: Conf, stage: str, run_id: str) -> str:
    return lake_location(conf, conf["lake.staging"], stage, run_id)


def publish(spark: SparkSession, staged: DataFrame, location: str, keys: Sequence[str]) -> PublishResult:
    """Insert the staged rows whose `keys` are absent from the table at `location`, in one commit."""
    staged_rows = staged.count()
    DeltaTable.createIfNotExists(spark).location(location).addColumns(staged.schema).execute()
    if staged_rows == 0:
        return PublishResult(location, 0, 0)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    table = DeltaTable.forPath(spark, location)
    table.alias("t").merge(staged.alias("s"), condition).whenNotMatchedInsertAll().execute()
    metrics = table.history(1).select("operation", "operationMetrics").first()
    inserted = int(metrics["operationMetrics"].get("numTargetRowsInserted", 0)) if metrics["operation"] == "MERGE" else 0
    return PublishResult(location, staged_rows, inserted)


def write_audit_publish(
    spark: SparkSession,
    conf: Conf,
    stage: str,
    run_id: str,
    batches: dict[str, tuple[DataFrame, Sequence[str]]],
    audit: Audit | None = None,
) -> dict[str, PublishResult]:
    """Stage every batch (table name -> (rows, key columns)), audit the main one, then publish all.

    The first entry is the stage's own table and is what `audit` validates; the others (the
    quarantine rows) are published after it. If the audit raises, nothing is published.
    """
    staged = {
        table: (stage_batch(spark, conf, f"{stage}/{table}", run_id, rows), keys)
        for table, (rows, keys) in batches.items()
    }
    if audit is not None:
        audit(next(iter(staged.values()))[0])
    results = {
        table: publish(spark, rows, table_location(conf, table), keys) for table, (rows, keys) in staged.items()
    }
    drop_location(spark, staging_location(conf, stage, run_id))
    return results


def drop_location(spark: SparkSession, location: str) -> None:
    """Delete a folder through Hadoop's FileSystem (local disk or S3A alike)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)
