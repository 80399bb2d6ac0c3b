"""A tiny lake with the seven catalog tables, written as Delta with the stages' own schemas.

Six images of three fruits; gold holds hand-made 3-component PCA arrays whose distances to the
Banana image 'Test/Banana/109_100.jpg' are known, and gold_variance holds an old model version
beside the current one, so the analyst queries can be checked value by value; the classifier's
metrics hold an older model too, whose per-fruit scores must not mix with the current one's.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipelines import lake
from pipelines.bronze import BRONZE_SCHEMA
from pipelines.classifier import CLASSIFIER_SCHEMA, METRICS_SCHEMA
from pipelines.gold import GOLD_SCHEMA, VARIANCE_SCHEMA
from pipelines.layout import Layout
from pipelines.silver import SILVER_SCHEMA

AT = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
TARGET_PATH = "Test/Banana/109_100.jpg"
CURRENT_MODEL, OLD_MODEL = "20261126T120000Z-n5-bbbbbbbb", "20261120T120000Z-n3-aaaaaaaa"
# image_id -> (path, label, split, pca)
IMAGES = {
    "id-banana-test": (TARGET_PATH, "Banana", "Test", [1.0, 1.0, 0.0]),
    "id-banana-train": ("Training/Banana/3_100.jpg", "Banana", "Training", [1.0, 2.0, 0.0]),  # distance 1
    "id-apple-1": ("Training/Apple Braeburn/1_100.jpg", "Apple Braeburn", "Training", [4.0, 5.0, 0.0]),  # 5
    "id-apple-2": ("Training/Apple Braeburn/2_100.jpg", "Apple Braeburn", "Training", [1.0, 1.0, 2.0]),  # 2
    "id-apple-3": ("Test/Apple Braeburn/3_100.jpg", "Apple Braeburn", "Test", [1.0, 4.0, 5.0]),  # sqrt(34)
    "id-kiwi": ("Training/Kiwi/1_100.jpg", "Kiwi", "Training", None),  # in bronze only: not featurized yet
}
EXPECTED_NEIGHBOURS = [("id-banana-train", 1.0), ("id-apple-2", 2.0), ("id-apple-1", 5.0), ("id-apple-3", 34 ** 0.5)]
CURRENT_VARIANCE = [0.6, 0.25, 0.1, 0.05]  # k = 3 components kept in gold (pca arrays of 3 values)
CURRENT_CLASSIFIER, OLD_CLASSIFIER = "20261126T130000Z-cccccccc", "20261120T130000Z-dddddddd"
CLASSIFIER_LABELS = ["Apple Braeburn", "Banana"]
# label -> (precision, recall) of the current classifier on the Test images (one Apple predicted Banana)
CURRENT_SCORES = {"Apple Braeburn": (1.0, 0.5), "Banana": (0.5, 1.0)}


def write_tiny_lake(spark, conf) -> None:
    bronze = [
        (image_id, path, label, split, b"\xff\xd8jpeg", 6, 6, AT, "JPEG", 100, 100, None, AT, "run-1")
        for image_id, (path, label, split, _) in IMAGES.items()
    ]
    silver = [
        (image_id, label, split, [0.5, 0.25, 0.0, 1.0], "MobileNetV2", "sha", "tflite", AT, "run-1")
        for image_id, (_, label, split, pca) in IMAGES.items() if pca is not None
    ]
    gold = [
        (image_id, label, split, pca, CURRENT_MODEL, "run-1")
        for image_id, (_, label, split, pca) in IMAGES.items() if pca is not None
    ]
    cumulative = [sum(CURRENT_VARIANCE[: i + 1]) for i in range(len(CURRENT_VARIANCE))]
    variance = [(i + 1, r, c, CURRENT_MODEL) for i, (r, c) in enumerate(zip(CURRENT_VARIANCE, cumulative))]
    variance += [(1, 0.9, 0.9, OLD_MODEL), (2, 0.1, 1.0, OLD_MODEL)]
    quarantine = [("id-broken", "Training/Kiwi/9_100.jpg", "bronze", "truncated: image file is truncated", 10, AT, "run-1", AT)]
    classifier = [
        (image_id, label, split, "Banana" if image_id in ("id-banana-test", "id-apple-3") else label,
         0.9, [0.1, 0.9] if image_id in ("id-banana-test", "id-apple-3") else [0.9, 0.1] if label == "Apple Braeburn" else [0.1, 0.9],
         CURRENT_CLASSIFIER, CURRENT_MODEL, "run-1")
        for image_id, (_, label, split, pca) in IMAGES.items() if pca is not None
    ]

    def metrics(version: str, gold_version: str, trained: datetime, scores: dict, accuracy: float) -> tuple:
        classes = [{"label": label, "precision": p, "recall": r, "f1": 2 * p * r / (p + r), "support": 1} for label, (p, r) in scores.items()]
        return (version, gold_version, trained, "run-1", "{}", 0.0, CLASSIFIER_LABELS, 3, 0, 2, accuracy, 0.67, classes,
                [], [{"reg_param": 0.0, "validation_accuracy": None}])

    classifier_metrics = [
        metrics(CURRENT_CLASSIFIER, CURRENT_MODEL, AT, CURRENT_SCORES, 0.5),
        metrics(OLD_CLASSIFIER, OLD_MODEL, datetime(2026, 11, 20, 13, 0, tzinfo=timezone.utc), {"Kiwi": (0.1, 0.1)}, 0.1),
    ]
    frames = {
        "bronze": spark.createDataFrame(bronze, BRONZE_SCHEMA),
        "silver": spark.createDataFrame(silver, SILVER_SCHEMA),
        "gold": spark.createDataFrame(gold, GOLD_SCHEMA),
        "gold_variance": spark.createDataFrame(variance, VARIANCE_SCHEMA),
        "quarantine": spark.createDataFrame(quarantine, lake.QUARANTINE_SCHEMA),
        "classifier": spark.createDataFrame(classifier, CLASSIFIER_SCHEMA),
        "classifier_metrics": spark.createDataFrame(classifier_metrics, METRICS_SCHEMA),
    }
    for table, frame in frames.items():
        frame.write.format("delta").mode("overwrite").save(Layout.from_conf(conf).location(table))


@pytest.fixture
def tiny_lake(spark, make_conf):
    """Conf of a fresh lake holding the seven tables; the catalog database is dropped afterwards."""
    conf = make_conf(None)
    write_tiny_lake(spark, conf)
    yield conf
    spark.sql(f"DROP DATABASE IF EXISTS {conf['catalog.database']} CASCADE")
