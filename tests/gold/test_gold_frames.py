"""Gold's DataFrame -> DataFrame functions on small in-memory frames (no lake)."""

import math

import pytest
from pyspark.sql import functions as F

from pipelines import exports, gold, gold_plots, lake
from tests.gold.conftest import SILVER_SCHEMA, silver_records

pytestmark = pytest.mark.spark

GOLD_ROWS = [
    ("a", "Kiwi", "Training", [1.0, 2.0, 3.0], "v1", "r1"),
    ("b", "Kiwi", "Test", [4.0, 5.0, 6.0], "v1", "r1"),
    ("c", "Lemon", "Training", [7.0, 8.0, 9.0], "v1", "r1"),
]


def silver_frame(spark, features):
    return spark.createDataFrame(silver_records(features), SILVER_SCHEMA)


def test_check_features_gives_each_bad_row_its_reason(spark):
    rows = [
        [1.0, 2.0, 3.0],
        None,
        [],
        [1.0, 2.0],
        [1.0, math.nan, 3.0],
        [1.0, math.inf, 3.0],
        [-math.inf, 2.0, 3.0],
        [1.0, None, 3.0],
    ]
    checked = gold.check_features(silver_frame(spark, rows), 3).orderBy("image_id").collect()
    codes = [None if r["reason"] is None else r["reason"].split(":")[0] for r in checked]
    assert codes == [None, "no_features", "no_features", "wrong_dimension", "non_finite", "non_finite", "non_finite", "non_finite"]
    assert "2 features where the PCA model expects 3" in checked[3]["reason"]
    assert "--refit" in checked[3]["reason"]


def test_modal_dimension_is_the_most_common_non_empty_length(spark):
    frame = silver_frame(spark, [[1.0, 2.0], [1.0, 2.0, 3.0], [3.0, 4.0], [], [], [], None])
    assert gold.modal_dimension(frame) == 2
    assert gold.modal_dimension(silver_frame(spark, [[], None])) is None


def test_fits_skip_gold_quarantined_rows_and_increments_also_skip_gold_rows(spark):
    silver = silver_frame(spark, [[1.0]] * 4)  # img00000 .. img00003
    in_gold = spark.createDataFrame([("img00000", "x", "s", [0.0], "v", "r")], gold.GOLD_SCHEMA)
    quarantine = spark.createDataFrame(
        [("img00001", None, "gold", "non_finite: ...", None, None, "r", None),
         ("img00002", "p.jpg", "bronze", "duplicate: ...", None, None, "r", None)],
        lake.QUARANTINE_SCHEMA,
    )
    new = gold.new_silver_rows(silver.unionByName(silver), in_gold, quarantine)
    assert sorted(r["image_id"] for r in new.collect()) == ["img00002", "img00003"]
    fit = gold.unquarantined_silver_rows(silver.unionByName(silver), quarantine)
    assert sorted(r["image_id"] for r in fit.collect()) == ["img00000", "img00002", "img00003"]


def test_quarantine_rows_fit_the_shared_schema(spark):
    checked = gold.check_features(silver_frame(spark, [[1.0], None]), 1)
    rows = gold.quarantine_rows(checked, "run-9")
    assert rows.schema.fieldNames() == lake.QUARANTINE_SCHEMA.fieldNames()
    [row] = rows.collect()
    assert (row["image_id"], row["stage"], row["run_id"]) == ("img00001", "gold", "run-9")
    assert row["reason"].startswith("no_features")


def test_export_frame_spreads_components_into_named_columns(spark):
    frame = exports.export_frame(spark.createDataFrame(GOLD_ROWS, gold.GOLD_SCHEMA), 3)
    assert frame.columns == ["image_id", "label", "split", "path", "pc_1", "pc_2", "pc_3"]
    first = frame.orderBy("image_id").first()
    assert first["path"] is None and first[4:] == (1.0, 2.0, 3.0)


def test_export_frame_carries_each_image_source_path(spark):
    rows = spark.createDataFrame(GOLD_ROWS, gold.GOLD_SCHEMA)
    ids = [row["image_id"] for row in rows.collect()]
    paths = spark.createDataFrame([(ids[0], "file:/in/Training/Kiwi/a.jpg"), ("gone", "file:/x.jpg")], "image_id string, path string")
    found = {row["image_id"]: row["path"] for row in exports.export_frame(rows, 3, paths).collect()}
    assert found[ids[0]] == "file:/in/Training/Kiwi/a.jpg"
    assert all(found[i] is None for i in ids[1:]) and "gone" not in found


def test_scatter_sample_is_bounded_per_label_and_stable(spark):
    rows = [(f"id{i}", "Kiwi" if i % 2 else "Lemon", "Training", [float(i), -float(i)], "v1", "r1") for i in range(40)]
    rows.append(("other", "Apple", "Training", [0.0, 0.0], "v1", "r1"))
    frame = spark.createDataFrame(rows, gold.GOLD_SCHEMA)
    first = gold_plots.scatter_sample(frame, ["Kiwi", "Lemon"], 5).collect()
    assert sorted(r["label"] for r in first) == ["Kiwi"] * 5 + ["Lemon"] * 5
    assert all(r["pc2"] == -r["pc1"] for r in first)
    again = gold_plots.scatter_sample(frame.repartition(3), ["Kiwi", "Lemon"], 5).collect()
    assert sorted(map(tuple, first)) == sorted(map(tuple, again))


def test_scatter_labels_prefer_configured_labels_then_the_most_frequent(spark):
    frame = spark.createDataFrame(GOLD_ROWS, gold.GOLD_SCHEMA)
    assert gold_plots.scatter_labels(frame, ["Lemon", "Mango", "Kiwi"], 8) == ["Lemon", "Kiwi"]
    assert gold_plots.scatter_labels(frame, ["Lemon", "Kiwi"], 1) == ["Lemon"]
    assert gold_plots.scatter_labels(frame, ["Mango"], 8) == ["Kiwi", "Lemon"]
    assert gold_plots.scatter_labels(frame.where(F.col("label") == "x"), ["Mango"], 8) == []
