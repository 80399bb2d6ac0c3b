"""Silver: MobileNetV2 features for every bronze image, in Spark, with the weights broadcast once.

read bronze -> keep images with no silver row and no silver quarantine row -> load the weights once
on the driver (meanwhile the Python workers start) -> broadcast them, or the model converted for
the TFLite runtime -> repartition -> Scalar-Iterator pandas UDF (one model per Python worker,
batched inference) -> split features / decode failures -> audit -> publish.

Decisions (see docs/silver.md):
- The UDF returns struct<features, error>: an image that cannot be decoded gets a null vector and
  a reason instead of failing the task, and becomes a quarantine row with `stage = 'silver'`.
  Every bronze image ends in exactly one of silver or silver quarantine, so the counts reconcile
  and a rerun processes nothing (and does not even load the model).
- The featurized batch is persisted once, so the silver rows and the quarantine rows are both
  derived from a single inference pass.
- Inference partitions = task slots x `silver.partitions_per_slot`, never more than one per
  `silver.batch_size` images: every core works, and a small increment does not start a model in
  workers that would get a handful of images.
- While the driver loads the weights, warm-up tasks already start TensorFlow and build the model
  in the Python workers the inference reuses; the broadcast weights are then only set into it.
  With TFLite, a conversion an earlier run recorded (pipelines/runtimes.py) spares the driver
  TensorFlow and the Keras build: it is broadcast at once, and the warm-up tasks build each
  worker's interpreter and run it once at the batches' shape, while the bronze bytes are read ahead.
- TensorFlow threads per worker = cores per executor / concurrent Python workers per executor,
  which is `spark.task.cpus` (each task runs in its own Python worker): the workers never
  oversubscribe the cores. The TFLite interpreter gets the same number of threads.
- `silver.runtime` (pipelines/runtimes.py): Keras, or the TFLite interpreter on the same model.
  Each row records the weights' sha256 and the runtime (`model_runtime`); a silver table written
  before the runtime was recorded gets the column on its next run (rows before: Keras).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from pipelines import features, lake, lakefs, runtimes
from pipelines.cli import execute_stage
from pipelines.options import stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout

STAGE = "silver"
ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"

SILVER_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("features", T.ArrayType(T.FloatType()), True),
        T.StructField("model_name", T.StringType(), True),
        T.StructField("model_weights_sha256", T.StringType(), True),
        T.StructField("model_runtime", T.StringType(), True),
        T.StructField("featurized_at", T.TimestampType(), True),
        T.StructField("run_id", T.StringType(), True),
    ]
)
FEATURE_RESULT = T.StructType(
    [T.StructField("features", T.ArrayType(T.FloatType())), T.StructField("error", T.StringType())]
)


@dataclasses.dataclass(frozen=True)
class SilverResult:
    """What one silver run did and with which settings: its summary line and the bench read it."""

    bronze_rows: int  # rows in bronze when the run read it
    new: int  # bronze images with neither a silver row nor a silver quarantine row: this run's batch
    already_present: int  # bronze images already featurized or quarantined by silver (bronze_rows - new)
    featurized: int  # silver rows this run inserted
    quarantined: int  # silver quarantine rows this run inserted (images that could not be decoded)
    quarantine_reasons: dict[str, int]  # those quarantine rows per reason code
    batch_size: int  # images per model call (silver.batch_size)
    arrow_batch_rows: int  # rows per Arrow batch sent to the Python workers (silver.arrow_batch_rows)
    partitions: int  # inference partitions (0: nothing new, no inference)
    tf_threads: int  # TensorFlow (or TFLite) threads per Python worker
    inference_seconds: float  # seconds of the one inference pass (0.0: nothing new)
    images_per_s: float  # new images per inference second (0.0: nothing new)
    weights: str | None  # "sha256 <12 hex> from <where the weights were loaded>" (None: model not loaded)
    runtime: str  # the inference runtime (silver.runtime, with its quantization)
    other_feature_models: list[str]  # model identities of silver rows written by other weights or runtimes
    seconds: float  # the run's wall-clock seconds


# ---------------------------------------------------------------- pure functions


def select_new_images(bronze: DataFrame, silver: DataFrame, quarantine: DataFrame) -> DataFrame:
    """Bronze rows whose image has neither a silver row nor a silver quarantine row yet."""
    done = silver.select("image_id").unionByName(quarantine.where(F.col("stage") == STAGE).select("image_id"))
    return bronze.join(done, "image_id", "left_anti")


def with_features(new_images: DataFrame, feature_udf) -> DataFrame:
    """The columns silver and its quarantine need, plus the UDF's struct<features, error> as `result`."""
    return new_images.select(
        "image_id", "path", "label", "split", "source_size_bytes", "source_modified_at",
        feature_udf(F.col("content"), F.col("orientation")).alias("result"),
    )


def silver_rows(featurized: DataFrame, model_name: str, weights_sha256: str, runtime_name: str, run_id: str) -> DataFrame:
    return featurized.where(F.col("result.error").isNull()).select(
        "image_id", "label", "split", F.col("result.features").alias("features"),
        F.lit(model_name).alias("model_name"), F.lit(weights_sha256).alias("model_weights_sha256"),
        F.lit(runtime_name).alias("model_runtime"), F.current_timestamp().alias("featurized_at"), F.lit(run_id).alias("run_id"),
    )


def quarantine_rows(featurized: DataFrame, run_id: str) -> DataFrame:
    return featurized.where(F.col("result.error").isNotNull()).select(
        "image_id", "path", F.lit(STAGE).alias("stage"), F.col("result.error").alias("reason"),
        "source_size_bytes", "source_modified_at", F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("recorded_at"),
    )


def inference_partitions(images: int, task_slots: int, partitions_per_slot: int, batch_size: int) -> int:
    """Enough partitions for every task slot to work, but no partition smaller than one batch."""
    return max(1, min(task_slots * partitions_per_slot, math.ceil(images / batch_size)))


def reason_code(reason: Column) -> Column:
    return F.split(reason, ":").getItem(0)


# ---------------------------------------------------------------- the UDF


def make_feature_udf(broadcast_payload, weights_sha256: str, runtime_name: str, batch_size: int, tf_threads: int):
    """Scalar-Iterator pandas UDF (content, orientation) -> struct<features, error>.

    The model (Keras, or a TFLite interpreter) is taken (built on first use in the worker, then
    cached at module level) once per task before the first batch, and reused for every batch of
    the partition.
    """

    @pandas_udf(FEATURE_RESULT)
    def featurize_images(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        model = None
        for contents, orientations in batches:
            if model is None:
                model = runtimes.worker_predictor(broadcast_payload, weights_sha256, runtime_name, tf_threads)
            vectors, errors = features.featurize(model, contents.tolist(), orientations.tolist(), batch_size)
            yield pd.DataFrame({"features": vectors, "error": errors})

    return featurize_images


def warm_up_workers(
    spark: SparkSession, workers: int, runtime_name: str, tf_threads: int, ready: "ReadyModel | None" = None
) -> Future:
    """Run runtimes.warm_worker in `workers` Python workers, in the background; returns the job's future.

    A pandas UDF like the feature UDF, so the workers it starts are the ones the inference tasks
    reuse (`spark.python.worker.reuse`): their start (and, for Keras, TensorFlow's import and the
    model build) then overlaps the driver's weights loading (and conversion) and the read-ahead
    instead of following them. With the model `ready` (broadcast already: a recorded TFLite
    conversion), each worker also builds its interpreter and runs it once on a batch of the
    inference's shape, so the inference pass starts on planned interpreters.
    """

    @pandas_udf(T.BooleanType())
    def warm_worker(ids: pd.Series) -> pd.Series:
        runtimes.warm_worker(runtime_name, tf_threads)
        if ready is not None:
            runtimes.warm_predictor(ready.broadcast, ready.weights_sha256, runtime_name, tf_threads, ready.batch_size)
        return pd.Series([True] * len(ids))

    return in_background("silver-warm-up", lambda: spark.range(0, workers, 1, workers).select(warm_worker("id")).collect())


@dataclasses.dataclass(frozen=True)
class ReadyModel:
    """A model broadcast before the warm-up (warm_up_workers): its bytes, identity, and the rows of
    the inference's first batch in each task (first_batch_rows), the shape the warm-up plans."""

    broadcast: Any
    weights_sha256: str
    batch_size: int


def in_background(name: str, job: Callable[[], object]) -> Future:
    """Run `job` (Spark jobs: the session is thread-safe) in a thread of its own; returns its future."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = executor.submit(job)
    executor.shutdown(wait=False)
    return future


# ---------------------------------------------------------------- I/O edges


def weights_settings(conf: Conf) -> features.WeightsSettings:
    return features.WeightsSettings(
        choice=conf["silver.weights"],
        keras_home=conf.path("silver.keras_home"),
        seed_dir=conf.path("silver.model_seed_dir"),
        weights_file=conf.path("silver.weights_file") if conf["silver.weights_file"] else "",
        weights_url=conf["silver.weights_url"],
        download=conf["silver.download"],
    )


def fetch_weights_file(spark: SparkSession, uri: str) -> str:
    """Copy a weights file named by a URI (s3a:// on EMR, where `deploy package` put it) to a local
    temporary file through the session's Hadoop file system, for Keras, which reads local files only."""
    target = f"{tempfile.mkdtemp(prefix='fruits-weights-')}/{uri.rstrip('/').rsplit('/', 1)[-1]}"
    try:
        lakefs.download(spark, uri, Path(target))
    except Exception as exc:  # noqa: BLE001 - a Py4J error: named in one line, not traced
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise features.WeightsUnavailable(
            f"silver.weights_file '{uri}' cannot be read ({reason[:300]}); upload it with `python -m deploy package` "
            f"or point silver.weights_file at a readable copy"
        ) from exc
    return target


def driver_weights_settings(spark: SparkSession, conf: Conf) -> features.WeightsSettings:
    """weights_settings, with a remote silver.weights_file copied to a local file first."""
    settings = weights_settings(conf)
    if "://" in settings.weights_file:
        settings = dataclasses.replace(settings, weights_file=fetch_weights_file(spark, settings.weights_file))
    return settings


def runtime(conf: Conf) -> runtimes.Runtime:
    return runtimes.Runtime.from_values(conf["silver.runtime"], conf["silver.tflite_quantization"])


def record_runtime_column(spark: SparkSession, location: str) -> bool:
    """Add `model_runtime` to a silver table written before it existed (True when added).

    A Delta MERGE ignores source columns the table lacks (schema auto-merge is off), so without
    this the runtime of new rows would be dropped silently. Adding a nullable column is a
    metadata-only commit; the earlier rows read null, which means Keras (the only runtime then).
    """
    table = lake.read_table(spark, location)
    if table is None or "model_runtime" in table.columns:
        return False
    spark.sql(
        f"ALTER TABLE delta.`{location}` ADD COLUMNS (model_runtime STRING COMMENT "
        f"'inference runtime of the features; null: written before it was recorded, i.e. keras')"
    )
    return True


def feature_models(silver: DataFrame) -> set[str]:
    """The model identities (weights sha256, plus @runtime unless Keras) of the rows of a silver frame."""
    rows = silver.select(runtimes.model_identity_column(silver)).distinct().collect()
    return {r[0] for r in rows if r[0] is not None}


def task_slots(spark: SparkSession) -> tuple[int, int]:
    """(concurrent tasks in the cluster, cores per task) from Spark's own settings."""
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    return max(1, spark.sparkContext.defaultParallelism // task_cpus), task_cpus


@contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int):
    """Set the Arrow batch size for this stage only, then restore the session's value."""
    previous = spark.conf.get(ARROW_BATCH_KEY)
    spark.conf.set(ARROW_BATCH_KEY, str(rows))
    try:
        yield
    finally:
        spark.conf.set(ARROW_BATCH_KEY, previous)


def read_bronze(spark: SparkSession, conf: Conf) -> DataFrame:
    layout = Layout.from_conf(conf)
    bronze = layout.read(spark, "bronze")
    if bronze is None:
        raise FileNotFoundError(
            f"bronze table '{layout.location('bronze')}' does not exist: run `python -m pipelines.bronze` with the same conf first"
        )
    return bronze


def run(spark: SparkSession, conf: Conf, run_id: str, audit: lake.Audit | None = None) -> SilverResult:
    started = time.monotonic()
    chosen = runtime(conf)
    bronze = read_bronze(spark, conf)
    layout = Layout.from_conf(conf)
    record_runtime_column(spark, layout.location("silver"))  # before any read of silver
    silver = layout.read_or_empty(spark, "silver")
    quarantine = layout.read_or_empty(spark, "quarantine")
    new_images = select_new_images(bronze, silver, quarantine)
    slots, task_cpus = task_slots(spark)
    bronze_rows = bronze.count()
    new = new_images.select("image_id").count()
    result = SilverResult(
        bronze_rows=bronze_rows, new=new, already_present=bronze_rows - new,
        featurized=0, quarantined=0, quarantine_reasons={},
        batch_size=conf["silver.batch_size"], arrow_batch_rows=conf["silver.arrow_batch_rows"],
        partitions=0, tf_threads=conf["silver.tf_threads"] or task_cpus,
        inference_seconds=0.0, images_per_s=0.0, weights=None,
        runtime=chosen.name, other_feature_models=[], seconds=0.0,
    )
    if result.new:
        result = _featurize_and_publish(spark, conf, run_id, new_images, slots, chosen, result, audit)
    return dataclasses.replace(result, seconds=round(time.monotonic() - started, 1))


def _featurize_and_publish(
    spark: SparkSession, conf: Conf, run_id: str, new_images: DataFrame, slots: int, chosen: runtimes.Runtime,
    result: SilverResult, audit: lake.Audit | None,
) -> SilverResult:
    """Featurize and publish the new images; `result` with what the inference did filled in."""
    batch_size = conf["silver.batch_size"]
    partitions = inference_partitions(result.new, slots, conf["silver.partitions_per_slot"], batch_size)
    # Read ahead: the new images' bytes are read from bronze and spread over the inference
    # partitions while the driver loads the model, instead of at the start of the inference pass,
    # where the Python workers would wait for them. Submitted before the warm-up: its tasks come first.
    to_featurize = new_images.repartition(partitions).persist(StorageLevel.MEMORY_AND_DISK)
    read_ahead = in_background("silver-read-ahead", to_featurize.count)
    broadcast_payload, warm_up = None, None
    try:
        try:
            settings = driver_weights_settings(spark, conf)
            # A TFLite conversion an earlier run recorded is read in a fraction of a second (no
            # TensorFlow on the driver): broadcast at once, the warm-up then plans the interpreters.
            loaded = runtimes.recorded_conversion(settings, chosen) if chosen.engine == "tflite" else None
            ready = None
            if loaded is not None:
                broadcast_payload = spark.sparkContext.broadcast(loaded.payload)
                ready = ReadyModel(broadcast_payload, loaded.weights_sha256, first_batch_rows(result.new, partitions, conf))
            warm_up = warm_up_workers(spark, min(slots, partitions), chosen.name, result.tf_threads, ready)
            if loaded is None:
                loaded = runtimes.load_driver_model(settings, chosen)
        except BaseException:
            for job in (read_ahead, warm_up):
                if job is not None:
                    job.exception()  # wait for it; its own failure must not hide why the weights failed
            raise
        read_ahead.result()
        warm_up.result()
        if broadcast_payload is None:
            broadcast_payload = spark.sparkContext.broadcast(loaded.payload)
        return _infer_and_publish(spark, conf, run_id, to_featurize, partitions, loaded, broadcast_payload, chosen, result, audit)
    finally:
        if warm_up is not None:
            warm_up.exception()  # the warm-up reads the broadcast: it ends before the broadcast is destroyed
        to_featurize.unpersist()
        if broadcast_payload is not None:
            broadcast_payload.destroy()


def first_batch_rows(images: int, partitions: int, conf: Conf) -> int:
    """The rows of the first model batch of an inference task: a partition's rows (the images
    spread evenly), at most one Arrow batch and one `silver.batch_size`."""
    return max(1, min(conf["silver.batch_size"], conf["silver.arrow_batch_rows"], math.ceil(images / partitions)))


def _infer_and_publish(
    spark: SparkSession, conf: Conf, run_id: str, to_featurize: DataFrame, partitions: int,
    loaded: runtimes.DriverModel, broadcast_payload: Any, chosen: runtimes.Runtime, result: SilverResult,
    audit: lake.Audit | None,
) -> SilverResult:
    """The inference pass over the read-ahead images, then write-audit-publish of silver and its quarantine."""
    batch_size = conf["silver.batch_size"]
    existing = Layout.from_conf(conf).read(spark, "silver")
    other_models = feature_models(existing) if existing is not None else set()
    other_models.discard(runtimes.model_identity(loaded.weights_sha256, chosen.name))
    feature_udf = make_feature_udf(broadcast_payload, loaded.weights_sha256, chosen.name, batch_size, result.tf_threads)
    featurized = with_features(to_featurize, feature_udf).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with arrow_batch_rows(spark, conf["silver.arrow_batch_rows"]):
            inference_started = time.monotonic()
            featurized.count()  # the one inference pass; both outputs below read the persisted result
            inference_seconds = time.monotonic() - inference_started
            # Counted before publishing: Delta's writes to silver and quarantine drop the cached
            # result (its plan reads those tables), and a recomputation would now find nothing new.
            reasons = (
                featurized.where(F.col("result.error").isNotNull())
                .groupBy(reason_code(F.col("result.error")).alias("code")).count().collect()
            )
            results = lake.write_audit_publish(
                spark, conf, STAGE, run_id,
                {  # the rejections first, silver last (lake.write_audit_publish: order)
                    "quarantine": lake.Batch(quarantine_rows(featurized, run_id), lake.QUARANTINE_KEYS, empty=not reasons),
                    "silver": lake.Batch(
                        silver_rows(featurized, features.MODEL_NAME, loaded.weights_sha256, chosen.name, run_id), ("image_id",)
                    ),
                },
                audit=audit,
            )
    finally:
        featurized.unpersist()
    return dataclasses.replace(
        result,
        featurized=results["silver"].inserted_rows,
        quarantined=results["quarantine"].inserted_rows,
        quarantine_reasons={r["code"]: r["count"] for r in reasons},
        partitions=partitions,
        inference_seconds=round(inference_seconds, 1),
        images_per_s=round(result.new / inference_seconds, 1) if inference_seconds else 0.0,
        weights=f"sha256 {loaded.weights_sha256[:12]} from {loaded.source}",
        other_feature_models=sorted(other_models),
    )


def summary_line(result: SilverResult, run_id: str) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(result.quarantine_reasons.items())) or "none"
    line = (
        f"silver run {run_id}: bronze rows {result.bronze_rows}, new {result.new}, "
        f"featurized {result.featurized}, quarantined {result.quarantined} ({reasons}), "
        f"already present {result.already_present}"
    )
    if not result.new:
        return f"{line}; nothing to featurize (model not loaded), {result.seconds} s"
    return (
        f"{line}; {result.images_per_s} images/s ({result.inference_seconds} s inference), "
        f"{result.seconds} s total; batch {result.batch_size}, Arrow batch {result.arrow_batch_rows} rows, "
        f"{result.partitions} partitions, {result.tf_threads} TF thread(s) per worker; runtime {result.runtime}; "
        f"weights {result.weights}{mixed_models_note(result.other_feature_models)}"
    )


def mixed_models_note(other_models: list[str]) -> str:
    """Said when silver already held rows of another weights file or runtime: the layer now mixes them."""
    if not other_models:
        return ""
    return (
        f"; NOTE: silver also holds features of {len(other_models)} other feature model(s) "
        f"({', '.join(m[:12] + (m[64:] if '@' in m else '') for m in other_models)}): gold will refit on the mix; "
        f"to keep one model, featurize into a new silver table (docs/silver.md, 'Runtimes')"
    )


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    code, _ = execute_stage(
        STAGE, args, lambda spark, conf, run_id, audit: run(spark, conf, run_id, audit=audit), summary_line,
        input_errors=(features.WeightsUnavailable, ConfError),
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
