"""A tiny lake with the five catalog tables, written as Delta with the stages' own schemas.

Six images of three fruits; gold holds hand-made 3-component PCA arrays whose distances to the
Banana image 'Test/Banana/109_100.jpg' are known, and gold_variance holds an old model version
beside the current one, so the analyst queries can be checked value by value.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipelines import lake
from pipelines.bronze import BRONZE_SCHEMA
from pipelines.gold import GOLD_SCHEMA, VARIANCE_SCHEMA
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
    frames = {
        "bronze": spark.createDataFrame(bronze, BRONZE_SCHEMA),
        "silver": spark.createDataFrame(silver, SILVER_SCHEMA),
        "gold": spark.createDataFrame(gold, GOLD_SCHEMA),
        "gold_variance": spark.createDataFrame(variance, VARIANCE_SCHEMA),
        "quarantine": spark.createDataFrame(quarantine, lake.QUARANTINE_SCHEMA),
    }
    for table, frame in frames.items():
        frame.write.format("delta").mode("overwrite").save(lake.table_location(conf, table))


@pytest.fixture
def tiny_lake(spark, make_conf):
    """Conf of a fresh lake holding the five tables; the catalog database is dropped afterwards."""
    conf = make_conf(None)
    write_tiny_lake(spark, conf)
    yield conf
    spark.sql(f"DROP DATABASE IF EXISTS {conf['catalog.database']} CASCADE")
