"""The Spark derivations and suites of quality/suites.py, without GX runs or lake I/O."""

from __future__ import annotations

import math

import pytest

from pipelines.config import load_conf
from pipelines import gold_model
from quality import suites

pytestmark = pytest.mark.spark

# Explained-variance shares of a 4-component fit: k = 3 reaches 0.97 (target 0.95).
RATIOS = [0.6, 0.3, 0.07, 0.03]


def test_array_checks_count_invalid_values_and_bound_the_finite_ones(spark):
    rows = [
        ("good", [0.5, 5.5, 1.0]),
        ("nan_and_inf", [float("nan"), 2.0, float("inf"), -float("inf")]),
        ("null_element", [None, 3.0]),
        ("null_array", None),
        ("empty", []),
    ]
    frame = spark.createDataFrame(rows, "image_id string, features array<float>")
    got = {r["image_id"]: r.asDict() for r in frame.select("image_id", *suites.array_checks("features")).collect()}

    assert got["good"] == {"image_id": "good", "features_length": 3, "features_invalid_values": 0, "features_min": 0.5, "features_max": 5.5}
    assert (got["nan_and_inf"]["features_length"], got["nan_and_inf"]["features_invalid_values"]) == (4, 3)
    assert got["nan_and_inf"]["features_min"] == got["nan_and_inf"]["features_max"] == 2.0
    assert (got["null_element"]["features_invalid_values"], got["null_element"]["features_min"]) == (1, 3.0)
    assert (got["null_array"]["features_length"], got["null_array"]["features_invalid_values"]) == (0, 0)
    assert got["empty"]["features_min"] is None and got["empty"]["features_length"] == 0


def test_row_checks_drop_binary_and_array_columns(spark):
    silver = spark.createDataFrame([("a", [1.0, 2.0], "m")], "image_id string, features array<float>, model_name string")
    assert suites.row_checks("silver", silver).columns == [
        "image_id", "features_length", "features_invalid_values", "features_min", "features_max"
    ]
    with pytest.raises(ValueError, match="unknown layer 'platinum'"):
        suites.row_checks("platinum", silver)


def test_batch_counts_give_the_quarantine_rate(spark):
    batch = spark.createDataFrame([("a",), ("b",), ("c",)], "image_id string")
    quarantine = spark.createDataFrame([("d", "T/x/d.jpg")], "image_id string, path string")
    empty = spark.createDataFrame([], "image_id string, path string")

    row = suites.batch_counts(batch, quarantine).first()
    assert (row["batch_rows"], row["batch_quarantined"], row["batch_quarantine_rate"]) == (3, 1, 0.25)
    assert suites.batch_counts(empty, empty).first()["batch_quarantine_rate"] == 0.0


def test_the_quarantine_rate_counts_only_what_is_new_and_lost(spark):
    """A changed or renamed file, a rejected file seen again or a duplicate of a batch row is recorded, not counted."""
    batch = spark.createDataFrame([("a",), ("b",)], "image_id string")
    quarantine = spark.createDataFrame(
        [
            ("a", "T/x/copy of a.jpg"),  # same bytes as a batch row
            ("z", "T/x/old.jpg"),  # a path the layer holds (changed in place)
            ("y", "T/x/renamed.jpg"),  # content the layer holds under another path
            ("w", "T/x/bad.jpg"),  # rejected in an earlier run, seen again
            ("v", "T/x/new bad.jpg"),  # the one new rejection
        ],
        "image_id string, path string",
    )
    recorded = spark.createDataFrame(
        [("a", None), ("b", None), ("q", "T/x/old.jpg"), ("y", "T/x/y.jpg"), ("w", "T/x/bad.jpg")],
        "image_id string, path string",
    )

    row = suites.batch_counts(batch, quarantine, recorded).first()

    assert (row["batch_quarantined"], row["batch_quarantined_known"]) == (5, 4)
    assert row["batch_quarantine_rate"] == pytest.approx(1 / 3)


def test_reconciliation_counts_every_kind_of_mismatch(spark):
    def ids(*values):
        return spark.createDataFrame([(v,) for v in values], "image_id string")

    row = suites.reconciliation("bronze", ids("a", "b", "c", "d"), ids("a", "b", "e", "a"), ids("b", "c", None)).first()
    assert row.asDict() == {
        "bronze_images": 4,
        "rows_after_publish": 3,
        "quarantined_images": 2,
        "unaccounted_bronze_images": 1,  # d
        "rows_without_bronze": 1,  # e
        "accounted_twice": 1,  # b
    }


def test_gold_after_publish_holds_only_the_batch_model_version(spark):
    schema = "image_id string, model_version string"
    published = spark.createDataFrame([("a", "v1"), ("b", "v1")], schema)
    refit = spark.createDataFrame([("a", "v2"), ("c", "v2")], schema)
    incremental = spark.createDataFrame([("c", "v1")], schema)

    def after(layer, batch):
        return sorted(r["image_id"] for r in suites.layer_after_publish(layer, published, batch).collect())

    assert after("gold", refit) == ["a", "c"]
    assert after("gold", incremental) == ["a", "b", "c"]
    assert sorted(r[0] for r in suites.layer_after_publish("silver", None, refit.drop("model_version")).collect()) == ["a", "c"]


def _checks(suite):
    return {(e.expectation_type if hasattr(e, "expectation_type") else e.type, getattr(e, "column", None)): e for e in suite.expectations}


def test_suites_take_their_thresholds_from_conf():
    conf = load_conf(["conf/local.yaml"], ["quality.silver.feature_length=16", "quality.silver.max_quarantine_rate=0.2"])
    rows = _checks(suites.rows_suite("silver", conf))
    length = rows[("expect_column_values_to_be_between", "features_length")]
    assert (length.min_value, length.max_value) == (16, 16)
    assert rows[("expect_column_values_to_be_between", "features_max")].max_value == 6.0
    assert ("expect_column_values_to_be_unique", "image_id") in rows

    totals = _checks(suites.totals_suite("silver", conf))
    assert totals[("expect_column_values_to_be_between", "batch_quarantine_rate")].max_value == 0.2
    assert ("expect_column_values_to_be_between", "unaccounted_bronze_images") in totals


def test_gold_suites_check_k_and_the_variance_target_only_when_k_is_chosen_by_it():
    conf = load_conf(["conf/local.yaml"])
    chosen = gold_model.model_facts("v1", RATIOS, None, 0.95)
    fixed = gold_model.model_facts("v1", RATIOS, 3, 0.95)

    pca = _checks(suites.rows_suite("gold", conf, chosen))[("expect_column_values_to_be_between", "pca_length")]
    assert (pca.min_value, pca.max_value) == (3, 3)
    assert _checks(suites.totals_suite("gold", conf, chosen))[("expect_column_values_to_be_between", "variance_reached")].min_value == 0.95
    fixed_variance = _checks(suites.totals_suite("gold", conf, fixed))[("expect_column_values_to_be_between", "variance_reached")]
    assert (fixed_variance.min_value, fixed_variance.max_value) == (0.0, 1.0 + gold_model.VARIANCE_TOLERANCE)  # a share, even when k is fixed


def test_every_bounded_column_is_also_expected_not_null():
    """GX's between check skips nulls (and NaN on pandas): the not-null expectation is what fails them."""
    conf = load_conf(["conf/local.yaml"])
    facts = gold_model.model_facts("v1", RATIOS, None, 0.95)
    for layer in ("bronze", "silver", "gold"):
        for suite in (suites.rows_suite(layer, conf, facts), suites.totals_suite(layer, conf, facts)):
            checks = _checks(suite)
            bounded = {column for kind, column in checks if kind == "expect_column_values_to_be_between"}
            assert bounded and all(("expect_column_values_to_not_be_null", c) in checks for c in bounded), suite.name
