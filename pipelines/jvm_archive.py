"""Make the driver JVM's class archive (Java's AppCDS) that sessions map at start (`make setup`).

Every stage, test and bench measurement that starts its own JVM loads some 24,000 classes (Spark,
Scala, Delta, Hadoop, the JDK), reading and verifying each: seconds of every run's fixed cost, the
same whether a run brings one new image or thousands. A JVM given an archive of those classes maps
them instead. Java 17 (the EMR release's) makes the archive at the exit of a JVM that ran a
representative workload (-XX:ArchiveClassesAtExit): here the Spark features the stages use, on a
few generated rows in a scratch folder. A class the workload did not load is read from its jar as
before (so are the classes of signed jars, Janino's, which Java does not archive, and the classes
Spark generates), so the archive only changes how fast a session starts, never what it computes.
Measured with -Xlog:class+load on a session that reads, counts, writes and merges a Delta table:
16,267 of 24,140 classes mapped from the archives (15,027 from this one, the rest from Java's own),
817 read from jars.

`python -m pipelines.jvm_archive --conf conf/local.yaml` makes the archive for this Java and these
jars (pipelines.session.class_archive names it) unless it exists, and deletes the archives of other
Java or jar versions in the same folder; the JVM refuses those anyway. Under spark-submit (EMR)
the platform starts the JVM and no archive is used.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark import SparkContext
from pyspark.sql import SparkSession

from pipelines.config import ConfError, load_conf
from pipelines.session import CLASS_ARCHIVE_PREFIX, build_spark_session, class_archive, launched_by_spark_submit

# How long the JVM may take to write the archive as it exits (~20 s for ~220 MiB on 2 cores).
EXIT_TIMEOUT_SECONDS = 600


def workload(spark: SparkSession, scratch: Path) -> None:
    """The Spark features the stages use, once each, so that their classes are in the archive:
    bronze's binaryFile scan and MERGE, silver's Arrow pandas UDF, gold's scaler, PCA and exports,
    the classifier's logistic regression and model files, the gates' joins and aggregations."""
    from delta.tables import DeltaTable
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    images = scratch / "images" / "Label one"
    images.mkdir(parents=True)
    for index in range(4):
        (images / f"{index}.jpg").write_bytes(bytes([index]) * 64)
    files = (
        spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").option("recursiveFileLookup", "true")
        .load(str(scratch / "images"))
        .select("path", F.sha2("content", 256).alias("image_id"), F.length("content").alias("size"))
    )
    table = str(scratch / "table")
    files.write.format("delta").save(table)
    DeltaTable.forPath(spark, table).alias("t").merge(files.alias("s"), "t.image_id <=> s.image_id") \
        .whenNotMatchedInsertAll().execute()
    spark.read.format("delta").load(table).write.format("delta").mode("append").save(table)

    @F.pandas_udf("array<float>")
    def features(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for sizes in batches:
            yield pd.Series([[float(size), float(size) / 2, 1.0] for size in sizes])

    rows = spark.read.format("delta").load(table).withColumn("features", features("size")) \
        .withColumn("label", (F.col("size") % 2).cast("double")).withColumn("vector", array_to_vector("features"))
    rows = rows.unionByName(rows.withColumn("label", 1 - F.col("label")))
    model = Pipeline(stages=[
        StandardScaler(inputCol="vector", outputCol="scaled"),
        PCA(k=2, inputCol="scaled", outputCol="pca"),
        LogisticRegression(featuresCol="pca", labelCol="label", maxIter=5),
    ]).fit(rows)
    model.write().save(str(scratch / "model"))
    scored = PipelineModel.load(str(scratch / "model")).transform(rows)
    scored.select("image_id", "prediction").write.parquet(str(scratch / "export.parquet"))
    scored.select("image_id", "prediction").write.option("header", "true").csv(str(scratch / "export.csv"))
    ranked = scored.withColumn("rank", F.row_number().over(Window.partitionBy("label").orderBy("image_id")))
    ranked.groupBy("label").agg(F.countDistinct("image_id"), F.bool_or(F.col("rank") == 1)).join(
        rows.select("label").distinct(), "label", "full_outer").collect()
    DeltaTable.forPath(spark, table).history().collect()


def make_archive(conf_files: list[str], overrides: list[str]) -> str | None:
    """Make the archive unless it exists; returns what was done for the summary line (None: nothing
    to do, the archive for this Java and these jars is there)."""
    conf = load_conf(conf_files, overrides)
    archive = class_archive(conf)
    if archive is None:
        return ("no class archive: spark.class_archive_dir is empty" if not conf["spark.class_archive_dir"]
                else "no class archive yet: resolve the packages' jars first (python -m pipelines.session --warm-jars)")
    if archive.is_file():
        return None
    if launched_by_spark_submit():
        raise ArchiveError("run `python -m pipelines.jvm_archive` with python, not spark-submit: it starts the JVM itself")
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Per process: two makers at once (two `make setup`) each write their own, and both are whole.
    partial = archive.with_name(f"{archive.stem}.{os.getpid()}.partial")
    dump_log = archive.with_suffix(".log")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="jvm-archive-") as scratch:
        spark = build_spark_session(conf, "jvm-archive", java_options=[
            f"-XX:ArchiveClassesAtExit={partial}", "-Xlog:cds*=off", f"-Xlog:cds*=warning:file={dump_log}",
        ])
        workload(spark, Path(scratch))
        spark.stop()
        # The JVM writes the archive as it exits, which it does when its stdin closes.
        launched = SparkContext._gateway.proc
        launched.stdin.close()
        try:
            status = launched.wait(timeout=EXIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            launched.kill()
            status = f"killed after {EXIT_TIMEOUT_SECONDS} s"
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"the JVM made no class archive at {partial} (exit {status}): see {dump_log}")
    for stale in archive.parent.glob(f"{CLASS_ARCHIVE_PREFIX}*"):
        if not stale.name.startswith(archive.stem):  # another Java's or jar set's, refused by this JVM anyway
            stale.unlink(missing_ok=True)
    partial.replace(archive)
    return f"class archive made in {time.time() - started:.0f} s: {archive} ({archive.stat().st_size / 2**20:.0f} MiB)"


class ArchiveError(RuntimeError):
    """The class archive could not be made (the message names the file to read)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", action="append", default=[], help="conf overlay (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        done = make_archive(args.conf or ["conf/local.yaml"], args.overrides)
    except (ConfError, ArchiveError) as exc:
        print(f"jvm_archive: {exc}", file=sys.stderr)
        return 2
    if done:
        print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
