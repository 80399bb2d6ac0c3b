"""What the classifier leaves beside its Spark model, after the commit: the predictor bundle that
`python -m pipelines.predict` and the service read, and the Test confusion-matrix plot.

The classifier's model folder is laid out here (pipelines/bundle.py reads it, docs/serving.md):
    <lake.root>/<lake.models>/<classifier.models_dir>/<v>/spark           the Spark ML model (the stage's)
    <lake.root>/<lake.models>/<classifier.models_dir>/<v>/predictor.*     the bundle (written here)
    <lake.root>/<lake.models>/<classifier.models_dir>/current.json        the published version
Both are written once per model, when absent: a run killed before them leaves them to the next run
(a no-op included), as gold's exports.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from pyspark.ml.classification import LogisticRegressionModel
from pyspark.sql import SparkSession

from pipelines import gold_model as gold_pca
from pipelines import lakefs, scores
from pipelines.config import Conf
from pipelines.layout import Layout

PLOT_FILE = "confusion_matrix.png"
# The classifier stage's folder under lake.reports (pipelines/classifier.py: STAGE).
REPORTS_DIR = "classifier"


def predictor_arrays(gold_pipeline, k: int, model: LogisticRegressionModel) -> dict[str, np.ndarray]:
    """The numbers `python -m pipelines.predict` needs to score a photo's features without Spark:
    pca = ((x - mean) / scale) @ components (a 0 scale gives 0, as Spark's StandardScaler does);
    probabilities = softmax(coefficients @ pca + intercepts), in the order of the model's labels."""
    scaler, pca = gold_pipeline.stages[0], gold_pipeline.stages[1]
    mean = scaler.mean.toArray()
    scale = scaler.std.toArray() if scaler.getWithStd() else np.ones_like(mean)
    return {
        "mean": mean.astype(np.float64), "scale": scale.astype(np.float64),
        "components": pca.pc.toArray()[:, :k].astype(np.float64),
        "coefficients": model.coefficientMatrix.toArray().astype(np.float64),
        "intercepts": model.interceptVector.toArray().astype(np.float64),
    }


def predictor_description(metrics: dict, gold_model: gold_pca.GoldModel) -> dict:
    """predictor.json: what the arrays belong to, for the predict command to check before use."""
    feature_models = list(gold_model.record["fit_feature_models"])
    feature_model = feature_models[0] if len(feature_models) == 1 else ",".join(feature_models)
    sha, _, runtime = feature_model.partition("@")
    return {
        "classifier_version": metrics["model_version"], "gold_model_version": metrics["gold_model_version"],
        "feature_model": feature_model, "weights_sha256": sha, "runtime": runtime or "keras",
        "labels": list(metrics["labels"]), "k": gold_model.k, "trained_at": metrics["trained_at"].isoformat(),
    }


def write_predictor(spark: SparkSession, conf: Conf, metrics: dict, gold_model: gold_pca.GoldModel) -> str:
    """Write the current model's predictor bundle when absent, then point current.json at it.

    After the commit, like gold's exports: a run killed before this leaves the bundle or the pointer
    behind, and the next run (a no-op included) writes them. The pointer is written last, so a
    reader following it always finds a complete bundle. Returns the bundle's folder.
    """
    version = metrics["model_version"]
    layout = Layout.from_conf(conf)
    folder = layout.classifier_model(version)
    pointer = f"{layout.classifier_models}/current.json"
    current = lakefs.read_small_file(spark, pointer)
    if current is not None and json.loads(current).get("classifier_version") == version:
        return folder
    with tempfile.TemporaryDirectory(prefix="fruits-predictor-") as scratch:
        if not lakefs.exists(spark, f"{folder}/predictor.json"):
            model = LogisticRegressionModel.load(f"{folder}/spark")
            arrays = Path(scratch) / "predictor.npz"
            np.savez(arrays, **predictor_arrays(gold_model.pipeline, gold_model.k, model))
            lakefs.put_file(spark, arrays, f"{folder}/predictor.npz")
            description = Path(scratch) / "predictor.json"
            description.write_text(json.dumps(predictor_description(metrics, gold_model), indent=1))
            lakefs.put_file(spark, description, f"{folder}/predictor.json")
        local_pointer = Path(scratch) / "current.json"
        local_pointer.write_text(json.dumps({"classifier_version": version}))
        lakefs.put_file(spark, local_pointer, pointer)
    return folder


def plot_location(conf: Conf, training_run_id: str) -> str:
    """The confusion-matrix plot of the model a run trained, beside that run's reports."""
    return Layout.from_conf(conf).reports(REPORTS_DIR, training_run_id, PLOT_FILE)


def plot_confusion(spark: SparkSession, conf: Conf, metrics: dict) -> str:
    """The model's Test confusion matrix, beside the reports of the run that trained it: drawn once
    per model (when absent). Returns its location."""
    target = plot_location(conf, metrics["run_id"])
    if lakefs.exists(spark, target) or not metrics["test_rows"]:
        return target
    evaluation = scores.Evaluation(
        metrics["test_rows"], metrics["test_accuracy"], metrics["test_macro_f1"],
        tuple(scores.ClassScores(**c) for c in metrics["classes"]),
        tuple((c["label"], c["predicted"], c["count"]) for c in metrics["confusion"]),
    )
    figure = scores.confusion_figure(evaluation, metrics["model_version"], conf["classifier.plot_max_labels"])
    with tempfile.TemporaryDirectory(prefix="fruits-confusion-") as scratch:
        local = Path(scratch) / PLOT_FILE
        figure.savefig(local, dpi=110)
        lakefs.put_file(spark, local, target)
    return target
