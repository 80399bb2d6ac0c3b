"""Classifier: which fruit is this? A multinomial logistic regression on gold's PCA components.

read conf -> read gold -> either train (first run, a gold refit, new labels in gold's Training
rows, changed classifier settings, or --retrain): compare the candidate regularisations on a
held-out part of the Training rows, train the best on every Training row, score every gold row,
evaluate on the Test rows, save the model; or score only the gold rows without a classifier row
with the current model -> the quality gate -> publish -> write the predictor bundle for
`python -m pipelines.predict` and the service, and the confusion-matrix plot, once per model
(pipelines/classifier_predictor.py, which also lays out the model folders).

Decisions (docs/classifier.md):
- Spark ML's LogisticRegression (family multinomial): one softmax over every label, whose
  probabilities the app shows. Its settings come from a measured comparison (docs/classifier.md);
  the stage itself picks the regularisation from `classifier.reg_params` by accuracy on the
  Training rows whose image id hashes into the validation share (deterministic, no Test row seen).
- The classifier table holds one row per gold image (its predicted label and the probability of
  every label), from one model version at a time, like gold: a retrain replaces it in one commit,
  an increment inserts its rows. The metrics table holds one row per model version (accuracy,
  macro-F1, per-class scores, confusion counts, the compared candidates): QA and analysts read it.
- A model is tied to gold's model version and to the features that version was fitted on: a gold
  refit retrains on the next run; new gold rows are only scored.
- The gate (pipelines/stages.py, quality/) refuses a model whose Test accuracy is below
  `classifier.min_accuracy` or whose labels do not cover gold's (a label only in Test).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import gold_model as gold_pca
from pipelines import lake, lakefs, scores
from pipelines.classifier_predictor import plot_confusion, write_predictor
from pipelines.cli import execute_stage
from pipelines.options import stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.stages import ModelCheck, ModelFacts

STAGE = "classifier"
METRICS_TABLE = "classifier_metrics"

CLASSIFIER_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), True),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("prediction", T.StringType(), True),
        T.StructField("probability", T.DoubleType(), True),
        T.StructField("probabilities", T.ArrayType(T.DoubleType(), False), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("gold_model_version", T.StringType(), True),
        T.StructField("run_id", T.StringType(), True),
    ]
)
_CLASS = T.StructType([T.StructField(n, t, False) for n, t in (
    ("label", T.StringType()), ("precision", T.DoubleType()), ("recall", T.DoubleType()), ("f1", T.DoubleType()),
    ("support", T.LongType()),
)])
_CELL = T.StructType([T.StructField(n, t, False) for n, t in (
    ("label", T.StringType()), ("predicted", T.StringType()), ("count", T.LongType()),
)])
_CANDIDATE = T.StructType([
    T.StructField("reg_param", T.DoubleType(), False), T.StructField("validation_accuracy", T.DoubleType(), True),
])
METRICS_SCHEMA = T.StructType(
    [
        T.StructField("model_version", T.StringType(), False),
        T.StructField("gold_model_version", T.StringType(), False),
        T.StructField("trained_at", T.TimestampType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("settings", T.StringType(), False),
        T.StructField("reg_param", T.DoubleType(), False),
        T.StructField("labels", T.ArrayType(T.StringType(), False), False),
        T.StructField("train_rows", T.LongType(), False),
        T.StructField("validation_rows", T.LongType(), False),
        T.StructField("test_rows", T.LongType(), False),
        T.StructField("test_accuracy", T.DoubleType(), True),
        T.StructField("test_macro_f1", T.DoubleType(), True),
        T.StructField("classes", T.ArrayType(_CLASS, False), False),
        T.StructField("confusion", T.ArrayType(_CELL, False), False),
        T.StructField("candidates", T.ArrayType(_CANDIDATE, False), False),
    ]
)
_FEATURES, LABEL_INDEX = "pca_vector", "label_index"


@dataclass(frozen=True)
class ClassifierResult:
    """What one classifier run did and the model the table now holds: its summary line reads it."""

    mode: str  # "trained", "incremental" (new gold rows scored) or "unchanged" (no gold row to score)
    reasons: list[str]  # why the run trained (empty: it did not)
    model_version: str  # version of the model the classifier rows come from
    gold_model_version: str  # gold's model version that model was trained on
    reg_param: float  # the regularisation chosen among classifier.reg_params
    candidates: int  # regularisations compared on the validation rows
    labels: int  # labels the model predicts
    test_rows: int  # gold Test rows the model was evaluated on
    test_accuracy: float | None  # share of those rows labelled right (None: no Test row)
    test_macro_f1: float | None  # macro-averaged F1 on those rows (None: no Test row)
    classifier_rows: int  # rows in the classifier table after the run
    rows_written: int  # classifier rows written by this run
    predictor: str  # location of the model's predictor bundle (classifier_predictor.write_predictor)
    plot: str  # location of the model's Test confusion-matrix plot
    seconds: float  # the run's wall-clock seconds


class ClassifierStateError(RuntimeError):
    """Gold holds nothing to train on; the message says what to run first."""


@dataclass(frozen=True)
class ClassifierSettings:
    """The `classifier.*` settings that shape a model (min_accuracy only judges it), checked once."""

    reg_params: tuple[float, ...]
    elastic_net_param: float
    max_iter: int
    validation_percent: int

    @classmethod
    def from_conf(cls, conf: Conf) -> "ClassifierSettings":
        regs = tuple(float(r) for r in conf["classifier.reg_params"])
        if not regs or any(r < 0 for r in regs):
            raise ConfError(f"classifier.reg_params={list(regs)} must list at least one value >= 0, e.g. [0.0, 0.001, 0.01]")
        if not 0.0 <= conf["classifier.elastic_net_param"] <= 1.0:
            raise ConfError(f"classifier.elastic_net_param={conf['classifier.elastic_net_param']} must be in [0, 1] (0: L2, 1: L1)")
        if conf["classifier.max_iter"] < 1:
            raise ConfError(f"classifier.max_iter={conf['classifier.max_iter']} must be at least 1")
        if not 0 <= conf["classifier.validation_percent"] < 100:
            raise ConfError(f"classifier.validation_percent={conf['classifier.validation_percent']} must be in [0, 100)")
        if not 0.0 <= conf["classifier.min_accuracy"] <= 1.0:
            raise ConfError(f"classifier.min_accuracy={conf['classifier.min_accuracy']} must be in [0, 1]")
        return cls(regs, float(conf["classifier.elastic_net_param"]), conf["classifier.max_iter"], conf["classifier.validation_percent"])

    def fingerprint(self) -> str:
        """What the metrics row records: a model trained with other settings is retrained."""
        return json.dumps({"reg_params": self.reg_params, "elastic_net_param": self.elastic_net_param,
                           "max_iter": self.max_iter, "validation_percent": self.validation_percent}, sort_keys=True)


# ---------------------------------------------------------------- pure transforms


def with_label_index(rows: DataFrame, labels: list[str]) -> DataFrame:
    """gold rows + the PCA vector and the label's index in `labels` (sorted: the model's class order;
    -1 for a label the model does not know)."""
    index = F.array_position(F.array(*[F.lit(label) for label in labels]), F.col("label")) - 1
    return rows.withColumn(_FEATURES, array_to_vector("pca")).withColumn(LABEL_INDEX, index.cast("double"))


def validation_part(rows: DataFrame, percent: int) -> tuple[DataFrame, DataFrame]:
    """(train, validation): the Training rows whose image id hashes into the first `percent` of 100
    buckets are held out (the same images whatever the partitioning or the run)."""
    bucket = F.pmod(F.xxhash64("image_id"), F.lit(100))
    return rows.where(bucket >= percent), rows.where(bucket < percent)


def scored_rows(predictions: DataFrame, labels: list[str], model_version: str, gold_version: str, run_id: str) -> DataFrame:
    """The classifier rows of a transformed frame: the predicted label, its probability, and the
    probability of every label in the model's order."""
    probabilities = vector_to_array("probability", "float64")
    predicted = F.element_at(F.array(*[F.lit(label) for label in labels]), F.col("prediction").cast("int") + 1)
    return predictions.select(
        "image_id", "label", "split", predicted.alias("prediction"), F.array_max(probabilities).alias("probability"),
        probabilities.alias("probabilities"), F.lit(model_version).alias("model_version"),
        F.lit(gold_version).alias("gold_model_version"), F.lit(run_id).alias("run_id"),
    )


def confusion_counts(rows: DataFrame) -> list[tuple[str, str, int]]:
    """(true label, predicted label, rows) over the Test rows of classifier rows: labels^2 at most."""
    test = rows.where(F.col("split") == "Test").groupBy("label", "prediction").count()
    return [(r["label"], r["prediction"], int(r["count"])) for r in test.collect()]


def model_version_for(trained_at: datetime, gold_version: str, run_id: str, settings: str) -> str:
    digest = hashlib.sha256(f"{gold_version}|{run_id}|{settings}".encode()).hexdigest()[:8]
    return f"{trained_at:%Y%m%dT%H%M%S}Z-{digest}"


def retrain_reasons(metrics: dict | None, gold_version: str, training_labels: set[str], settings: ClassifierSettings) -> list[str]:
    """Why the current model cannot go on scoring gold's rows (empty: it can)."""
    if metrics is None:
        return ["no model yet"]
    reasons = []
    if metrics["gold_model_version"] != gold_version:
        reasons.append(f"gold was refitted (model {metrics['gold_model_version']} -> {gold_version})")
    new_labels = sorted(training_labels - set(metrics["labels"]))
    if new_labels:
        reasons.append(f"gold's Training rows hold labels the model never saw: {', '.join(new_labels[:5])}")
    if metrics["settings"] != settings.fingerprint():
        reasons.append("classifier.* settings changed")
    return reasons


# ---------------------------------------------------------------- the gate's facts


def quality_facts(spark: SparkSession, conf: Conf, staged: lake.Staged) -> ModelFacts:
    """What the classifier's gate checks about the batch's model: its metrics row (staged beside a
    new model, else published), the Test accuracy against classifier.min_accuracy, and gold's
    labels it does not cover."""
    versions = [r[0] for r in staged.batch.select("model_version").distinct().limit(2).collect()]
    version = versions[0] if len(versions) == 1 else None
    layout = Layout.from_conf(conf)
    metrics = staged.tables.get(METRICS_TABLE)
    if metrics is None:
        metrics = layout.read_or_empty(spark, METRICS_TABLE)
    rows = metrics.where(F.col("model_version") == version).collect() if version else []
    gold = layout.read_or_empty(spark, "gold")
    gold_labels = {r[0] for r in gold.select("label").distinct().collect()} - {None}
    record = rows[0] if len(rows) == 1 else None
    labels = list(record["labels"]) if record else []
    return model_facts(version, len(rows), labels, record["test_accuracy"] if record else None, gold_labels, conf["classifier.min_accuracy"])


def model_facts(
    version: str | None, metrics_rows: int, labels: list[str], accuracy: float | None, gold_labels: set[str], min_accuracy: float
) -> ModelFacts:
    uncovered = sorted(gold_labels - set(labels))
    return ModelFacts(
        version,
        len(labels) if labels else None,
        (
            ModelCheck("metrics_rows", metrics_rows, 1, 1, f"The model version has one row in lake.tables.{METRICS_TABLE}."),
            ModelCheck(
                "test_accuracy", accuracy, min_accuracy, 1.0,
                "Share of gold's Test images the model labels right; it must reach classifier.min_accuracy "
                "(null: gold has no Test image to evaluate on).",
            ),
            ModelCheck(
                "uncovered_labels", len(uncovered), 0, 0,
                "Gold labels the model cannot predict (it never saw them in Training)"
                + (f": {', '.join(uncovered[:10])}." if uncovered else "."),
            ),
        ),
    )


# ---------------------------------------------------------------- the current model


def current_metrics(spark: SparkSession, conf: Conf, table: DataFrame) -> dict | None:
    """The metrics row of the model whose rows the classifier table holds, when its saved model is
    there too (None: no model, or one a killed run left without its record: the run retrains)."""
    versions = [r[0] for r in table.select("model_version").distinct().limit(2).collect()]
    if len(versions) != 1:
        return None
    layout = Layout.from_conf(conf)
    metrics = layout.read(spark, METRICS_TABLE)
    record = None if metrics is None else metrics.where(F.col("model_version") == versions[0]).first()
    if record is None or not lakefs.exists(spark, f"{layout.classifier_model(versions[0])}/spark"):
        return None
    return record.asDict(recursive=True)


# ---------------------------------------------------------------- runs


def run(spark: SparkSession, conf: Conf, run_id: str, retrain: bool = False, audit: lake.Audit | None = None) -> ClassifierResult:
    """One classifier run; the result says whether it trained, scored new rows, or had nothing to do."""
    started = time.monotonic()
    settings = ClassifierSettings.from_conf(conf)
    layout = Layout.from_conf(conf)
    gold = layout.read(spark, "gold")
    gold_model = None if gold is None else gold_pca.current_model(spark, conf, gold)
    if gold_model is None:
        raise ClassifierStateError(f"gold table '{layout.location('gold')}' has no rows to learn from: run `python -m pipelines.gold` first")
    table = layout.read_or_empty(spark, STAGE)
    labels_by_split = gold.groupBy("label").agg(F.max((F.col("split") == "Training").cast("int")).alias("training")).collect()
    training_labels = {r["label"] for r in labels_by_split if r["training"] == 1} - {None}
    untrainable = sorted({r["label"] for r in labels_by_split} - training_labels - {None})
    if untrainable:
        print(
            f"classifier: warning: gold holds {len(untrainable)} label(s) in no Training image ({', '.join(untrainable[:10])}): "
            "the model cannot predict them and its gate refuses it; add Training images of them, or remove them",
            file=sys.stderr,
        )
    metrics = current_metrics(spark, conf, table)
    reasons = ["--retrain"] if retrain else retrain_reasons(metrics, gold_model.version, training_labels, settings)
    if reasons:
        metrics = _train_and_replace(spark, conf, run_id, settings, gold, gold_model.version, sorted(training_labels), audit)
        written, mode = None, "trained"  # the table was replaced: every row is this run's
    else:
        written = _score_new_rows(spark, conf, run_id, gold, table, metrics, audit)
        mode = "incremental" if written else "unchanged"
    published = spark.read.format("delta").load(layout.location(STAGE))
    classifier_rows = published.count()
    predictor = write_predictor(spark, conf, metrics, gold_model)
    plot = plot_confusion(spark, conf, metrics)
    return ClassifierResult(
        mode=mode, reasons=reasons, model_version=metrics["model_version"],
        gold_model_version=metrics["gold_model_version"], reg_param=metrics["reg_param"],
        candidates=len(metrics["candidates"]), labels=len(metrics["labels"]),
        test_rows=metrics["test_rows"], test_accuracy=metrics["test_accuracy"], test_macro_f1=metrics["test_macro_f1"],
        classifier_rows=classifier_rows, rows_written=classifier_rows if mode == "trained" else written,
        predictor=predictor, plot=plot, seconds=round(time.monotonic() - started, 1),
    )


def _train_and_replace(
    spark: SparkSession, conf: Conf, run_id: str, settings: ClassifierSettings, gold: DataFrame, gold_version: str,
    labels: list[str], audit: lake.Audit | None,
) -> dict:
    """Compare the candidates, train the best on every Training row, score gold, save the model,
    then replace the classifier table and add the metrics row in one write-audit-publish.

    The saved model is written before the audit (the gate reads the metrics staged beside the
    rows): a refused model stays as an orphan folder, never a classifier row without its model.
    """
    if not labels:
        raise ClassifierStateError(
            f"gold holds no Training rows (split 'Training') to learn from: put labelled images under a "
            f"Training folder of input.path ({conf['input.path']}) and rerun the chain"
        )
    rows = with_label_index(gold, labels).cache()
    training = rows.where(F.col("split") == "Training")
    train, validation = validation_part(training, settings.validation_percent)
    validation_rows = validation.count()
    candidates = []
    for reg in settings.reg_params:
        accuracy = None
        if validation_rows and len(settings.reg_params) > 1:
            predicted = _estimator(settings, reg).fit(train).transform(validation)
            accuracy = predicted.agg(F.avg((F.col("prediction") == F.col(LABEL_INDEX)).cast("double"))).first()[0]
        candidates.append((reg, accuracy))
    reg_param = scores.best_candidate(candidates)
    model = _estimator(settings, reg_param).fit(training)
    trained_at = datetime.now(timezone.utc)
    version = model_version_for(trained_at, gold_version, run_id, settings.fingerprint())
    model.write().overwrite().save(f"{Layout.from_conf(conf).classifier_model(version)}/spark")
    scored = scored_rows(model.transform(rows), labels, version, gold_version, run_id)
    evaluation = scores.evaluate(confusion_counts(scored))
    record = {
        "model_version": version, "gold_model_version": gold_version, "trained_at": trained_at, "run_id": run_id,
        "settings": settings.fingerprint(), "reg_param": reg_param, "labels": labels,
        "train_rows": training.count() - validation_rows, "validation_rows": validation_rows,
        "test_rows": evaluation.test_rows, "test_accuracy": evaluation.accuracy, "test_macro_f1": evaluation.macro_f1,
        "classes": [c.__dict__ for c in evaluation.classes],
        "confusion": [{"label": t, "predicted": p, "count": n} for t, p, n in evaluation.confusion],
        "candidates": [{"reg_param": r, "validation_accuracy": a} for r, a in candidates],
    }
    lake.write_audit_publish(
        spark, conf, STAGE, run_id,
        {
            STAGE: lake.Batch(scored, replace=True),
            METRICS_TABLE: lake.Batch(spark.createDataFrame([record], METRICS_SCHEMA), ("model_version",)),
        },
        audit=audit,
    )
    rows.unpersist()
    return record


def _estimator(settings: ClassifierSettings, reg_param: float) -> LogisticRegression:
    return LogisticRegression(
        featuresCol=_FEATURES, labelCol=LABEL_INDEX, family="multinomial", regParam=reg_param,
        elasticNetParam=settings.elastic_net_param, maxIter=settings.max_iter,
    )


def _score_new_rows(
    spark: SparkSession, conf: Conf, run_id: str, gold: DataFrame, table: DataFrame, metrics: dict, audit: lake.Audit | None
) -> int:
    """Score the gold rows without a classifier row with the current model (none: nothing is
    loaded, staged or committed); returns the rows inserted."""
    new = gold.join(table.select("image_id"), "image_id", "left_anti")
    if new.isEmpty():
        return 0
    model = LogisticRegressionModel.load(f"{Layout.from_conf(conf).classifier_model(metrics['model_version'])}/spark")
    labels = list(metrics["labels"])
    scored = scored_rows(model.transform(with_label_index(new, labels)), labels, metrics["model_version"], metrics["gold_model_version"], run_id)
    results = lake.write_audit_publish(spark, conf, STAGE, run_id, {STAGE: lake.Batch(scored, ("image_id",))}, audit=audit)
    return results[STAGE].inserted_rows


# ---------------------------------------------------------------- command line


def summary_line(result: ClassifierResult, run_id: str) -> str:
    accuracy = "no Test rows" if result.test_accuracy is None else (
        f"Test accuracy {result.test_accuracy:.4f}, macro-F1 {result.test_macro_f1:.4f} on {result.test_rows} images"
    )
    why = f" ({'; '.join(result.reasons)})" if result.mode == "trained" else ""
    return (
        f"classifier run {run_id}: {result.mode}{why}, model {result.model_version} on gold model "
        f"{result.gold_model_version}, {result.labels} labels, reg_param {result.reg_param:g} "
        f"(of {result.candidates} compared), {accuracy}; classifier rows {result.classifier_rows} "
        f"(written {result.rows_written}), {result.seconds} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train a new model on gold now, even if the current one still fits")
    args = parser.parse_args(argv)
    code, _ = execute_stage(
        STAGE, args, lambda spark, conf, run_id, audit: run(spark, conf, run_id, retrain=args.retrain, audit=audit),
        summary_line, input_errors=(ClassifierStateError, gold_pca.GoldStateError), context=lambda conf: {"retrain": args.retrain},
        force=args.retrain,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
