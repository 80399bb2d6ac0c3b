"""Silver on real Delta tables: the DataFrame functions, correctness against Keras, bad inputs, reruns."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import Row
from pyspark.sql import functions as F

from pipelines import bronze, features, lake, silver
from pipelines.config import load_conf
from pipelines.layout import Layout
from tests.conftest import MODEL_SEED, copy_sample, jpeg_bytes, png_bytes

pytestmark = pytest.mark.spark


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- pure DataFrame functions


def test_select_new_images_skips_silver_and_silver_quarantine_only(spark):
    bronze_rows = spark.createDataFrame(
        [("a", "A/a.jpg"), ("b", "A/b.jpg"), ("c", "A/c.jpg"), ("d", "A/d.jpg")], "image_id string, path string"
    )
    silver_rows = spark.createDataFrame([("a",)], "image_id string")
    quarantine = spark.createDataFrame(
        [("b", "A/b.jpg", "silver", "undecodable: x"), ("c", "A/c.jpg", "bronze", "duplicate: y")],
        "image_id string, path string, stage string, reason string",
    )
    new = silver.select_new_images(bronze_rows, silver_rows, quarantine)
    assert sorted(r.image_id for r in new.collect()) == ["c", "d"]


def test_featurized_rows_split_into_silver_and_quarantine(spark):
    modified = datetime(2024, 1, 2, tzinfo=timezone.utc)
    featurized = spark.createDataFrame(
        [
            ("ok", "Apple/ok.jpg", "Apple", "Training", 10, modified, ([0.5, 1.5], None)),
            ("bad", "Apple/bad.jpg", "Apple", "Test", 0, modified, (None, "empty_content: nothing")),
        ],
        "image_id string, path string, label string, split string, source_size_bytes long, "
        "source_modified_at timestamp, result struct<features: array<float>, error: string>",
    )
    good = silver.silver_rows(featurized, "model-x", "f" * 64, "tflite", "run-1").collect()
    assert [(r.image_id, r.label, r.split, r.features, r.model_name, r.model_weights_sha256, r.model_runtime, r.run_id)
            for r in good] == [("ok", "Apple", "Training", [0.5, 1.5], "model-x", "f" * 64, "tflite", "run-1")]
    assert silver.silver_rows(featurized, "m", "f" * 64, "tflite", "r").schema.fieldNames() == silver.SILVER_SCHEMA.fieldNames()
    assert good[0].featurized_at is not None
    rejected = silver.quarantine_rows(featurized, "run-1")
    assert rejected.schema.fieldNames() == lake.QUARANTINE_SCHEMA.fieldNames()
    row = rejected.collect()[0]
    assert (row.image_id, row.path, row.stage, row.reason, row.run_id) == (
        "bad", "Apple/bad.jpg", "silver", "empty_content: nothing", "run-1"
    )
    assert row.source_size_bytes == 0 and row.recorded_at is not None


@pytest.mark.parametrize(
    ("images", "expected"),
    [(6270, 4), (100, 2), (64, 1), (1, 1), (129, 3)],
)
def test_inference_partitions_fill_the_slots_without_tiny_partitions(images, expected):
    assert silver.inference_partitions(images, task_slots=2, partitions_per_slot=2, batch_size=64) == expected


def test_the_warm_up_plans_the_shape_of_the_first_model_batch_of_a_task():
    """An increment of 60 images in 2 partitions sends batches of 30 (not silver.batch_size=32)."""
    conf = load_conf(["conf/local.yaml"], ["silver.batch_size=32", "silver.arrow_batch_rows=256"])
    assert silver.first_batch_rows(60, 2, conf) == 30
    assert silver.first_batch_rows(1200, 4, conf) == 32
    assert silver.first_batch_rows(1, 1, conf) == 1
    assert silver.first_batch_rows(1200, 4, load_conf(["conf/local.yaml"], ["silver.arrow_batch_rows=16"])) == 16


# ---------------------------------------------------------------- correctness against Keras


def _silver_table(spark, conf):
    return spark.read.format("delta").load(Layout.from_conf(conf).location("silver"))


def _silver_quarantine(spark, conf):
    return spark.read.format("delta").load(Layout.from_conf(conf).location("quarantine")).where(F.col("stage") == "silver")


def test_spark_features_equal_single_process_keras_predict(spark, make_conf, tmp_path, sample):
    if not (MODEL_SEED / features.WEIGHTS_FILE_NAME).is_file():
        pytest.skip(f"MobileNetV2 weights not found in {MODEL_SEED}")
    input_root = tmp_path / "input"
    copies = copy_sample(input_root, 20)
    conf = make_conf(
        input_root, f"silver.keras_home={tmp_path / 'keras'}", f"silver.model_seed_dir={MODEL_SEED}",
        "silver.batch_size=8", "silver.arrow_batch_rows=12",
    )
    bronze.run(spark, conf, "bronze-1")
    stats = silver.run(spark, conf, "silver-1")
    assert (stats.new, stats.featurized, stats.quarantined) == (20, 20, 0)

    rows = _silver_table(spark, conf).join(
        spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).select("image_id", "path"), "image_id"
    ).collect()
    assert len(rows) == 20 and {len(r.features) for r in rows} == {features.FEATURE_SIZE}

    import keras

    weights_path = tmp_path / "keras" / "models" / features.WEIGHTS_FILE_NAME
    model = features.build_model(str(weights_path))
    by_path = {r.path: np.asarray(r.features, dtype=np.float32) for r in rows}
    paths = sorted(by_path)
    assert {str(c.relative_to(input_root)) for c in copies} == set(paths)
    inputs = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(str(input_root / p), target_size=(224, 224), interpolation="bilinear")
            )
            for p in paths
        ]
    )
    expected = model.predict(keras.applications.mobilenet_v2.preprocess_input(inputs), verbose=0)
    spark_features = np.stack([by_path[p] for p in paths])
    assert np.abs(spark_features - expected).max() < 1e-4
    assert {r.model_weights_sha256 for r in rows} == {features.weights_sha256(model.get_weights())}
    assert {r.model_name for r in rows} == {features.MODEL_NAME}
    assert stats.runtime == conf["silver.runtime"] and {r.model_runtime for r in rows} == {conf["silver.runtime"]}

    again = silver.run(spark, conf, "silver-2")
    assert (again.new, again.featurized, again.weights) == (0, 0, None)
    assert _silver_table(spark, conf).count() == 20


# ---------------------------------------------------------------- bad and odd inputs


@pytest.fixture
def odd_lake(spark, make_conf, tmp_path, sample):
    """Bronze with 3 real images, grey/CMYK/alpha/palette images, and 4 crafted rows with bad content."""
    input_root = tmp_path / "input"
    real = copy_sample(input_root, 3)[0].read_bytes()
    odd = input_root / "Training" / "Odd"
    odd.mkdir(parents=True)
    palette = io.BytesIO()
    Image.new("RGB", (30, 30), (20, 160, 40)).convert("P").save(palette, format="PNG", transparency=0)
    good_odd = {
        "grey.jpg": jpeg_bytes(mode="L", color=128),
        "cmyk.jpg": jpeg_bytes(mode="CMYK", color=(0, 128, 200, 0)),
        "alpha.png": png_bytes(),
        "palette.png": palette.getvalue(),
    }
    for name, data in good_odd.items():
        (odd / name).write_bytes(data)
    # Keras: the odd inputs' outcomes under both runtimes are compared in test_silver_runtimes.py.
    conf = make_conf(input_root, "silver.weights=random", "silver.batch_size=4", "silver.runtime=keras")
    bronze.run(spark, conf, "bronze-1")
    location = Layout.from_conf(conf).location("bronze")
    table = spark.read.format("delta").load(location)
    odd_ids = {r.path.rsplit("/", 1)[-1]: r.image_id for r in table.where(F.col("path").startswith("Training/Odd/")).collect()}
    assert set(odd_ids) == set(good_odd), "bronze must accept the odd but valid images"
    template = table.where(F.col("path").endswith("grey.jpg")).first().asDict()
    bad = {"empty.jpg": b"", "null.jpg": None, "truncated.jpg": real[: len(real) // 2], "random.jpg": os.urandom(1500)}
    crafted = [
        Row(**{**template, "image_id": _sha(data or name.encode()), "path": f"Training/Odd/{name}", "content": data,
               "size_bytes": len(data or b""), "orientation": None, "run_id": "crafted"})
        for name, data in bad.items()
    ]
    spark.createDataFrame(crafted, table.schema).write.format("delta").mode("append").save(location)
    return conf, odd_ids


def test_odd_images_get_features_and_bad_ones_are_quarantined(spark, odd_lake):
    conf, odd_ids = odd_lake
    stats = silver.run(spark, conf, "silver-1")
    assert (stats.bronze_rows, stats.new, stats.featurized, stats.quarantined) == (11, 11, 7, 4)
    assert stats.quarantine_reasons == {"empty_content": 2, "undecodable": 2}

    featurized = {r.image_id: r.features for r in _silver_table(spark, conf).collect()}
    for name, image_id in odd_ids.items():
        vector = featurized.get(image_id)
        assert vector is not None and len(vector) == features.FEATURE_SIZE, name
        assert np.isfinite(vector).all(), name
    quarantined = {r.path: r.reason for r in _silver_quarantine(spark, conf).collect()}
    assert set(quarantined) == {f"Training/Odd/{n}" for n in ("empty.jpg", "null.jpg", "truncated.jpg", "random.jpg")}
    assert quarantined["Training/Odd/truncated.jpg"].startswith("undecodable: ")
    assert quarantined["Training/Odd/null.jpg"].startswith("empty_content: ")

    bronze_count = spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).count()
    assert bronze_count == _silver_table(spark, conf).count() + _silver_quarantine(spark, conf).count()

    again = silver.run(spark, conf, "silver-2")
    assert (again.new, again.featurized, again.quarantined) == (0, 0, 0)
    assert (_silver_table(spark, conf).count(), _silver_quarantine(spark, conf).count()) == (7, 4)
