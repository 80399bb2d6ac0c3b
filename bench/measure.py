"""One measurement, in its own process: `python -m bench.measure KIND --conf ... --set ... --out FILE`.

`bench.run` starts one process per measurement, so no JVM, Python worker, TensorFlow graph or
memory peak carries over from one measurement to the next. The input folder and the lake are
those of the conf (`input.path`, `lake.root`, set by bench.run); the result is written as JSON.

Kinds:
- limit: one Python process, no Spark: silver's own decode/preprocess/predict path
  (pipelines.features.featurize) over the images, after one warm-up batch; TensorFlow uses every
  core. What the model costs on this machine, the ceiling for silver.
- reference: the seed notebook's job (bench/reference.py) from the input folder to Parquet.
- bronze: bronze.run into a fresh lake (prepares silver's input; timed for information).
- silver: silver.run on that lake, with the memory of the driver and the workers sampled.
- chain: bronze, silver, gold, each behind its quality gate, as `make run` chains them; run
  twice by bench.run on the same lake: the full run, then the run after the increment.
Session start is outside every timing: it is a per-process constant, not the stage's work.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.memory import MemorySampler, jvm_heap_probe
from pipelines import features
from pipelines.cli import load_stage_conf, new_run_id, stage_parser
from pipelines.config import Conf

KINDS = ("limit", "reference", "bronze", "silver", "chain")


def timed(function: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def rate(images: int, seconds: float) -> float:
    return round(images / seconds, 2) if seconds > 0 else 0.0


def load_model(conf: Conf):
    """MobileNetV2 as silver builds it, with the weights silver would use (the file, or random in tests)."""
    from pipelines import silver

    settings = silver.weights_settings(conf)
    if settings.choice == "random":
        return features.build_model(None)
    path, _ = features.locate_weights_file(settings)
    return features.build_model(str(path))


def image_bytes(conf: Conf) -> list[bytes]:
    from bench.dataset import list_images

    root = Path(conf.path("input.path"))
    return [(root / rel).read_bytes() for rel in list_images(root, conf["input.extensions"])]


def measure_limit(conf: Conf) -> dict:
    tf = features.import_tensorflow()

    contents = image_bytes(conf)
    batch_size = conf["silver.batch_size"]
    model = load_model(conf)
    features.featurize(model, contents[:batch_size], [None] * min(batch_size, len(contents)), batch_size)
    with MemorySampler(conf["bench.memory_poll_seconds"]) as sampler:
        (vectors, errors), seconds = timed(
            lambda: features.featurize(model, contents, [None] * len(contents), batch_size)
        )
    featurized = sum(v is not None for v in vectors)
    return {
        "images": featurized,
        "failed": len(contents) - featurized,
        "seconds": round(seconds, 2),
        "images_per_s": rate(featurized, seconds),
        "batch_size": batch_size,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
        "memory": sampler.peaks.as_mib(),
    }


def measure_reference(spark, conf: Conf) -> dict:
    from bench.reference import run_reference
    from pipelines import lake

    weights = "imagenet" if conf["silver.weights"] == "imagenet" else None
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        result = run_reference(
            spark,
            conf.path("input.path"),
            lake.lake_location(conf, conf["bench.reference_dir"]),
            conf["bench.reference_partitions"],
            conf["bench.reference_arrow_batch_rows"],
            weights,
        )
    result["memory"] = sampler.peaks.as_mib()
    return result


def measure_bronze(spark, conf: Conf) -> dict:
    from pipelines import bronze

    stats, seconds = timed(lambda: bronze.run(spark, conf, new_run_id(conf)))
    return {"images": stats["new_rows"], "rejected": stats["rejected"], "seconds": round(seconds, 2),
            "images_per_s": rate(stats["new_rows"], seconds)}


def measure_silver(spark, conf: Conf) -> dict:
    from pipelines import silver

    vcpus = spark.sparkContext.defaultParallelism
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        stats, seconds = timed(lambda: silver.run(spark, conf, new_run_id(conf)))
    return {
        "images": stats["new"],
        "featurized": stats["featurized"],
        "quarantined": stats["quarantined"],
        "seconds": round(seconds, 2),
        "images_per_s": rate(stats["new"], seconds),
        "inference_seconds": stats["inference_seconds"],
        "inference_images_per_s": stats["images_per_s"],
        "vcpus": vcpus,
        "settings": {k: stats[k] for k in ("batch_size", "arrow_batch_rows", "partitions", "tf_threads")}
        | {"partitions_per_slot": conf["silver.partitions_per_slot"]},
        "memory": sampler.peaks.as_mib(),
    }


def run_chain(spark, conf: Conf) -> dict:
    """bronze -> silver -> gold, each refusing a failed upstream layer and auditing its batch; seconds per stage."""
    from pipelines import stages as registry
    from quality import gates

    stages = {}
    counts = {}
    for declared in registry.STAGES:
        name, run_id = declared.name, new_run_id(conf)

        def stage(module=declared.module(), name=name, run_id=run_id):
            gates.require_upstream_passed(spark, conf, name)
            return module.run(spark, conf, run_id, audit=gates.auditor(spark, conf, name, run_id))

        stats, seconds = timed(stage)
        stages[name] = round(seconds, 2)
        counts[name] = stats
    return {
        "images": counts["bronze"]["new_rows"],
        "seconds": round(sum(stages.values()), 2),
        "stages": stages,
        "silver_images": counts["silver"]["new"],
        "gold_mode": counts["gold"].get("mode"),
    }


def measure_chain(spark, conf: Conf) -> dict:
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        result = run_chain(spark, conf)
    result["memory"] = sampler.peaks.as_mib()
    return result


# The Spark measurements, each given the process's session (started outside the timing).
SPARK_MEASUREMENTS: dict[str, Callable[..., dict]] = {
    "reference": measure_reference,
    "bronze": measure_bronze,
    "silver": measure_silver,
    "chain": measure_chain,
}


def run_measurement(kind: str, conf: Conf) -> dict:
    """`limit` without Spark; the others on a SparkSession started (and stopped) around them."""
    if kind == "limit":
        return measure_limit(conf)
    from pipelines.session import build_spark_session

    spark = build_spark_session(conf, f"bench-{kind}")
    try:
        return SPARK_MEASUREMENTS[kind](spark, conf)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    # Before Keras or the JVM start: the JVM's Python workers inherit it (the reference loads the
    # weights file from the Keras cache in every task).
    features.use_keras_home(conf.path("silver.keras_home"))
    try:
        result = run_measurement(args.kind, conf)
    except Exception as exc:  # noqa: BLE001 - reported to bench.run, which goes on with the others
        traceback.print_exc()
        Path(args.out).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), encoding="utf-8")
        return 1
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
