"""One measurement, in its own process: `python -m bench.measure KIND --conf ... --set ... --out FILE`.

`bench.run` starts one process per measurement, so no JVM, Python worker, TensorFlow graph or
memory peak carries over from one measurement to the next. The input folder and the lake are
those of the conf (`input.path`, `lake.root`, set by bench.run); the result is written as JSON.

Kinds:
- limit: one Python process, no Spark: silver's own decode/preprocess/predict path
  (pipelines.features.featurize) over the images, after one warm-up batch, with the runtime of
  `silver.runtime` (bench.run measures both); TensorFlow or the TFLite interpreter uses every
  core. What the model costs on this machine, the ceiling for silver with that runtime.
- runtimes: the runtime options side by side on the same images, in one process: Keras, TFLite
  float32 and each `bench.quantizations` conversion; for each, the single-process images/s, the
  largest feature difference from Keras, and the accuracy of a logistic regression on gold
  (gold's own PCA fit on all the images, the regression fitted on the Training split, scored on
  the Test split): what a runtime changes in the product, not only in speed.
- reference: the seed notebook's job (bench/reference.py) from the input folder to Parquet.
- bronze: bronze.run into a fresh lake (prepares silver's input; timed for information).
- silver: silver.run on that lake, with the memory of the driver and the workers sampled.
- chain: the image layers (the declared stages through gold: bronze, silver, gold), each behind its
  quality gate, as `make run` chains them; run twice by bench.run on the same lake: the full run,
  then the run after the increment. The classifier after them trains on gold's Training and Test
  images, which a bench's N images spread over 114 fruits barely provide: `python -m
  bench.classifier` measures it on the whole sample's lake instead (docs/classifier.md).
- chain_warm: the chain in one application after each `--then-add FOLDER` is copied into the
  input: the last run is timed, as `python -m pipelines.run --watch` runs an increment after its
  first (bench.run adds two increments of the bench's size); `--sample-stacks FILE` writes the
  main thread's stacks during that last run (bench/stack_sampler.py, for bench.profile).
- data_docs: no Spark: the Great Expectations side of bronze's gate with 1 run, a full Data Docs
  volume (quality.docs_volume_runs runs) and ten volumes' worth held in its GX project
  (bench/data_docs.py): what a gate pays as the lake's runs accumulate, at most a volume's.
Session start is outside every timing: it is a per-process constant, not the stage's work.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.memory import MemorySampler, jvm_heap_probe
from pipelines import features
from pipelines.options import load_stage_conf, new_run_id, stage_parser
from pipelines.config import Conf

KINDS = ("limit", "runtimes", "reference", "bronze", "silver", "chain", "chain_warm", "data_docs")


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


def runtime_model(keras_model, runtime):
    """The model silver would call with this runtime; the TFLite interpreter gets every core."""
    from pipelines import runtimes

    if runtime.engine == "keras":
        return keras_model
    return runtimes.TFLiteModel(runtimes.convert(keras_model, runtime.quantization), threads=os.cpu_count() or 1)


def image_bytes(conf: Conf) -> list[bytes]:
    from bench.dataset import list_images

    root = Path(conf.path("input.path"))
    return [(root / rel).read_bytes() for rel in list_images(root, conf["input.extensions"])]


def measure_limit(conf: Conf) -> dict:
    tf = features.import_tensorflow()

    from pipelines import silver

    runtime = silver.runtime(conf)
    contents = image_bytes(conf)
    batch_size = conf["silver.batch_size"]
    model = runtime_model(load_model(conf), runtime)
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
        "runtime": runtime.name,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
        "memory": sampler.peaks.as_mib(),
    }


def measure_runtimes(spark, conf: Conf) -> dict:
    """Each runtime option on the same images: speed, largest feature difference from Keras, gold accuracy."""
    from bench.dataset import list_images
    from pipelines import runtimes

    root = Path(conf.path("input.path"))
    relative = list_images(root, conf["input.extensions"])
    contents = [(root / rel).read_bytes() for rel in relative]
    labels = [Path(rel).parent.name for rel in relative]
    splits = [Path(rel).parts[0] for rel in relative]
    batch_size = conf["silver.batch_size"]
    keras_model = load_model(conf)
    options = [runtimes.Runtime("keras"), runtimes.Runtime("tflite")]
    options += [runtimes.Runtime("tflite", q) for q in conf["bench.quantizations"]]
    results, reference, started = [], None, time.perf_counter()
    for runtime in options:
        model = runtime_model(keras_model, runtime)
        features.featurize(model, contents[:batch_size], [None] * min(batch_size, len(contents)), batch_size)
        (vectors, errors), seconds = timed(lambda: features.featurize(model, contents, [None] * len(contents), batch_size))
        matrix = np.stack([v if v is not None else np.full(features.FEATURE_SIZE, np.nan, np.float32) for v in vectors])
        reference = matrix if reference is None else reference
        difference = np.abs(matrix - reference)
        results.append({
            "runtime": runtime.name,
            "images_per_s": rate(len(contents), seconds),
            "max_abs_diff_vs_keras": float(np.nanmax(difference)),
            "mean_abs_diff_vs_keras": float(np.nanmean(difference)),
            "failed": sum(e is not None for e in errors),
            **accuracies(spark, conf, matrix, labels, splits),
        })
    for key in ("gold_accuracy", "exact_pca_accuracy"):
        keras_accuracy = results[0][key]
        for result in results:
            accuracy = result[key]
            change = None if None in (accuracy, keras_accuracy) else round(accuracy - keras_accuracy, 4)
            result[key.replace("accuracy", "accuracy_change")] = change
    for result in results:  # the verdict's figure: gold's PCA swung between runs on the same vectors
        result["accuracy_change"] = result["exact_pca_accuracy_change"]
    return {"images": len(contents), "test_images": splits.count("Test"), "options": results,
            "seconds": round(time.perf_counter() - started, 2), "images_per_s": None}


def accuracies(spark, conf: Conf, matrix: np.ndarray, labels: list[str], splits: list[str]) -> dict:
    """Test-split accuracy of a logistic regression fitted on the Training split, on two projections:

    - gold_accuracy: gold's own fit (pipelines.gold_model.fit_model, the conf's variance target) on every
      image, as the gold stage does;
    - exact_pca_accuracy: the same centring and k rule (gold_model.select_pca_k) with an exact SVD in
      numpy, a check on the first: on the bench's MobileNetV2 features Spark ML's PCA was seen to
      return components that are not the leading ones, and not the same ones from run to run
      (docs/benchmarks.md): the first figure swings under changes far below the feature
      tolerance, so the verdict (accuracy_change) uses the second.
    None when the images lack one of the splits.
    """
    from pyspark.ml.functions import array_to_vector

    from pipelines import gold, gold_model

    keep = [i for i, vector in enumerate(matrix) if np.isfinite(vector).all()]
    rows = [(str(i), labels[i], splits[i], [float(x) for x in matrix[i]], "m") for i in keep]
    silver_rows = spark.createDataFrame(
        rows, "image_id string, label string, split string, features array<float>, model_weights_sha256 string"
    )
    vectors = gold.with_feature_vectors(gold.check_features(silver_rows, features.FEATURE_SIZE))
    pipeline, _, _ = gold_model.fit_model(vectors, gold_model.GoldSettings.from_conf(conf), features.FEATURE_SIZE, len(rows))
    projected = gold.gold_rows(pipeline.transform(vectors), "bench", "bench").select(
        "label", "split", array_to_vector("pca").alias("x")
    )
    centred = matrix[keep].astype(np.float64) - matrix[keep].astype(np.float64).mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    k = gold_model.select_pca_k(singular**2 / np.sum(singular**2), conf["gold.variance_target"])
    exact = spark.createDataFrame(
        [(labels[i], splits[i], [float(x) for x in vector]) for i, vector in zip(keep, centred @ components[:k].T)],
        "label string, split string, pca array<double>",
    ).select("label", "split", array_to_vector("pca").alias("x"))
    return {"gold_accuracy": regression_accuracy(conf, projected), "exact_pca_accuracy": regression_accuracy(conf, exact)}


def regression_accuracy(conf: Conf, projected) -> float | None:
    """Spark ML's LogisticRegression (`bench.accuracy_reg_param`) on the Training rows, scored on the Test rows."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StringIndexer

    indexed = StringIndexer(inputCol="label", outputCol="y").fit(projected).transform(projected)
    train, test = indexed.where("split = 'Training'").cache(), indexed.where("split = 'Test'")
    try:  # cached: each of the regression's iterations is a pass over the projected Training rows
        if train.isEmpty() or test.isEmpty():
            return None
        regression = LogisticRegression(featuresCol="x", labelCol="y", maxIter=100, regParam=conf["bench.accuracy_reg_param"])
        predictions = regression.fit(train).transform(test)
        return round(MulticlassClassificationEvaluator(labelCol="y", metricName="accuracy").evaluate(predictions), 4)
    finally:
        train.unpersist()


def measure_reference(spark, conf: Conf) -> dict:
    from bench.reference import run_reference
    from pipelines.layout import Layout

    weights = "imagenet" if conf["silver.weights"] == "imagenet" else None
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        result = run_reference(
            spark,
            conf.path("input.path"),
            Layout.from_conf(conf).folder(conf["bench.reference_dir"]),
            conf["bench.reference_partitions"],
            conf["bench.reference_arrow_batch_rows"],
            weights,
        )
    result["memory"] = sampler.peaks.as_mib()
    return result


def measure_bronze(spark, conf: Conf) -> dict:
    from pipelines import bronze

    result, seconds = timed(lambda: bronze.run(spark, conf, new_run_id(conf)))
    return {"images": result.new_rows, "rejected": result.rejected, "seconds": round(seconds, 2),
            "images_per_s": rate(result.new_rows, seconds)}


def measure_silver(spark, conf: Conf) -> dict:
    from pipelines import silver

    vcpus = spark.sparkContext.defaultParallelism
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        result, seconds = timed(lambda: silver.run(spark, conf, new_run_id(conf)))
    return {
        "images": result.new,
        "featurized": result.featurized,
        "quarantined": result.quarantined,
        "seconds": round(seconds, 2),
        "images_per_s": rate(result.new, seconds),
        "inference_seconds": result.inference_seconds,
        "inference_images_per_s": result.images_per_s,
        "vcpus": vcpus,
        "runtime": result.runtime,
        "settings": {
            "batch_size": result.batch_size, "arrow_batch_rows": result.arrow_batch_rows,
            "partitions": result.partitions, "tf_threads": result.tf_threads,
            "partitions_per_slot": conf["silver.partitions_per_slot"],
        },
        "memory": sampler.peaks.as_mib(),
    }


def run_chain(spark, conf: Conf) -> dict:
    """bronze -> silver -> gold, each refusing a failed upstream layer and auditing its batch; seconds per stage."""
    from pipelines import marks, stages as registry
    from quality import gates

    stages = {}
    results = {}  # each stage's result (marks.Unchanged when it skipped), by stage name
    for declared in map(registry.get, registry.through("gold")):
        name, run_id = declared.name, new_run_id(conf)

        def stage(module=declared.module(), name=name, run_id=run_id):
            gates.require_upstream_passed(spark, conf, name)
            audit = gates.auditor(spark, conf, name, run_id)

            def run():  # as pipelines.cli.execute_stage runs a stage
                gates.preload()
                return module.run(spark, conf, run_id, audit=audit)

            return marks.run_unless_unchanged(spark, conf, name, run_id, run)

        results[name], seconds = timed(stage)
        stages[name] = round(seconds, 2)
    bronze, silver, gold = results["bronze"], results["silver"], results["gold"]
    return {
        "images": 0 if marks.unchanged(bronze) else bronze.new_rows,
        "seconds": round(sum(stages.values()), 2),
        "stages": stages,
        "silver_images": 0 if marks.unchanged(silver) else silver.new,
        "gold_mode": "unchanged" if marks.unchanged(gold) else gold.mode,
    }


def measure_chain(spark, conf: Conf) -> dict:
    with MemorySampler(conf["bench.memory_poll_seconds"], jvm_heap_probe(spark)) as sampler:
        result = run_chain(spark, conf)
    result["memory"] = sampler.peaks.as_mib()
    return result


def measure_chain_warm(spark, conf: Conf, then_add: Sequence[Path] = (), sample_stacks: Path | None = None) -> dict:
    """The chain in one application after each folder of `then_add` is copied into input.path:
    the last run is the measurement (the watch mode's case, `python -m pipelines.run --watch`: the
    JVM, the generated code and the Delta logs warm from the runs before), the first in process
    is kept beside it for comparison. With `sample_stacks`, the main thread's stacks during the
    last run are written there in py-spy's raw format (bench.profile's running-application column)."""
    if len(then_add) < 2:
        raise ValueError("chain_warm needs two --then-add folders: one to warm the application, one to time")

    def run_after(folder: Path) -> dict:
        shutil.copytree(folder, conf.path("input.path"), dirs_exist_ok=True)  # copy2: times kept
        return run_chain(spark, conf)

    first = [run_after(folder) for folder in then_add[:-1]][0]  # the warm-up runs, the first kept
    if sample_stacks is None:
        return {**run_after(then_add[-1]), "first_in_process": first}
    from bench.stack_sampler import StackSampler

    sampler = StackSampler()
    try:
        with sampler.on():
            last = run_after(then_add[-1])
    finally:
        sampler.close()
    sampler.write_raw(sample_stacks)
    return {**last, "first_in_process": first}


def measure_data_docs(conf: Conf) -> dict:
    from bench import data_docs

    volume = conf["quality.docs_volume_runs"]
    rows = data_docs.timed_gates(conf, [1, volume, 10 * volume])
    return {"seconds": rows[1]["gate_gx_seconds"], "docs_volume_runs": volume, "runs": rows}


# The Spark measurements, each given the process's session (started outside the timing).
SPARK_MEASUREMENTS: dict[str, Callable[..., dict]] = {
    "runtimes": measure_runtimes,
    "reference": measure_reference,
    "bronze": measure_bronze,
    "silver": measure_silver,
    "chain": measure_chain,
}


def run_measurement(kind: str, conf: Conf, then_add: Sequence[Path] = (), sample_stacks: Path | None = None) -> dict:
    """`limit` and `data_docs` without Spark; the others on a SparkSession started (and stopped) around them."""
    if kind == "limit":
        return measure_limit(conf)
    if kind == "data_docs":
        return measure_data_docs(conf)
    from pipelines.session import build_spark_session

    spark = build_spark_session(conf, f"bench-{kind}")
    try:
        if kind == "chain_warm":
            return measure_chain_warm(spark, conf, then_add, sample_stacks)
        return SPARK_MEASUREMENTS[kind](spark, conf)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    parser.add_argument("--then-add", action="append", default=[], type=Path, metavar="FOLDER",
                        help="chain_warm: copy FOLDER into input.path, then run the chain (repeatable, in order)")
    parser.add_argument("--sample-stacks", type=Path, default=None, metavar="FILE",
                        help="chain_warm: the main thread's stacks during the last run, in py-spy's raw format (bench.profile)")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    # Before Keras or the JVM start: the JVM's Python workers inherit it (the reference loads the
    # weights file from the Keras cache in every task).
    features.use_keras_home(conf.path("silver.keras_home"))
    try:
        result = run_measurement(args.kind, conf, args.then_add, args.sample_stacks)
    except Exception as exc:  # noqa: BLE001 - reported to bench.run, which goes on with the others
        traceback.print_exc()
        Path(args.out).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), encoding="utf-8")
        return 1
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
