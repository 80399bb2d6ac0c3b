"""Every numeric expectation of every suite fails on NaN, +inf and -inf, and the failure names the column.

GX's between check skips missing values (null, and NaN on pandas) and Spark orders NaN above every
number, so a NaN once passed gold's variance target (issue 21, item 3). Each suite is validated
here as the gate validates it: its frame through `suites.non_finite_as_null` (the per-row frame on
Spark, the one row of totals built by `metrics.totals_frame` on pandas), failures described by
`gx_runner.describe_failure`. The valid frames pass, so a failure is the poisoned value's doing.
"""

from __future__ import annotations

import itertools
import math

import great_expectations as gx
import pytest

from pipelines.config import load_conf
from pipelines import gold_model
from quality import gx_runner, metrics, suites

pytestmark = pytest.mark.spark

# Explained-variance shares of a 4-component fit: k = 3 reaches 0.97 (target 0.95).
RATIOS = [0.6, 0.3, 0.07, 0.03]

POISONS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
GOLD_CHOSEN = gold_model.model_facts("v1", RATIOS, None, 0.95)
GOLD_FIXED = gold_model.model_facts("v1", RATIOS, 3, 0.95)

# layer -> (gold facts, a valid per-row record: numeric columns as doubles so they can hold NaN)
ROWS = {
    "bronze": (None, {"image_id": "ok", "path": "Training/A/1.jpg", "label": "A", "size_bytes": 27.0}),
    "silver": (None, {"image_id": "ok", "features_length": 1280.0, "features_invalid_values": 0.0, "features_min": 0.5, "features_max": 5.5}),
    "gold": (GOLD_CHOSEN, {"image_id": "ok", "model_version": "v1", "pca_length": 3.0, "pca_invalid_values": 0.0}),
}
BOUNDED_ROW_COLUMNS = {
    "bronze": {"size_bytes"},
    "silver": {"features_length", "features_invalid_values", "features_min", "features_max"},
    "gold": {"pca_length", "pca_invalid_values"},
}
COUNTS = {"batch_rows": 5, "batch_quarantined": 0, "batch_quarantine_rate": 0.0, "rows_after_publish": 5}
RECONCILED = {"unaccounted_{u}_images": 0, "rows_without_{u}": 0, "accounted_twice": 0, "quarantined_images": 0, "{u}_images": 5}
TOTALS = {
    "bronze": (None, COUNTS),
    "silver": (None, {**COUNTS, **{k.format(u="bronze"): v for k, v in RECONCILED.items()}}),
    "gold": (GOLD_CHOSEN, {
        **COUNTS, **{k.format(u="silver"): v for k, v in RECONCILED.items()},
        "model_versions": 1, "array_length": 3, "variance_reached": 0.97, "variance_components": 4,
    }),
}
BOUNDED_TOTALS = {
    "bronze": {"batch_quarantine_rate", "rows_after_publish"},
    "silver": {"batch_quarantine_rate", "rows_after_publish", "unaccounted_bronze_images", "rows_without_bronze", "accounted_twice"},
    "gold": {
        "batch_quarantine_rate", "rows_after_publish", "unaccounted_silver_images", "rows_without_silver", "accounted_twice",
        "model_versions", "variance_components", "variance_reached",
    },
}
_names = itertools.count()


@pytest.fixture(scope="module")
def context():
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate(context, suite, frame) -> list[str]:
    """Failure lines of `suite` on `frame` (Spark or pandas), as the gate validates and describes them."""
    frame = suites.non_finite_as_null(frame)
    spark_frame = not hasattr(frame, "iloc")
    kind = "spark" if spark_frame else "pandas"
    try:
        source = context.data_sources.get(kind)
    except KeyError:
        source = context.data_sources.add_spark(kind) if spark_frame else context.data_sources.add_pandas(kind)
    asset = source.add_dataframe_asset(f"{suite.name}-{next(_names)}")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    if "image_id" in frame.columns:  # the per-row frames, as the gate validates them
        result_format["unexpected_index_column_names"] = ["image_id"]
    result = batch.validate(suite, result_format=result_format)
    return [gx_runner.describe_failure(suite.name, r) for r in result.results if not r.success]


def bounded_columns(suite) -> set[str]:
    return {e.column for e in suite.expectations if e.expectation_type == "expect_column_values_to_be_between"}


@pytest.mark.parametrize("layer", list(ROWS))
def test_rows_suites_fail_each_numeric_column_holding_nan_or_infinity(spark, context, layer):
    conf = load_conf(["conf/local.yaml"])
    gold, valid = ROWS[layer]
    suite = suites.rows_suite(layer, conf, gold)
    assert bounded_columns(suite) == BOUNDED_ROW_COLUMNS[layer]
    columns = list(valid)
    schema = ", ".join(f"{c} {'double' if isinstance(valid[c], float) else 'string'}" for c in columns)
    assert validate(context, suite, spark.createDataFrame([tuple(valid.values())], schema)) == []

    poisoned = [
        tuple(name if c == "image_id" else value if c in BOUNDED_ROW_COLUMNS[layer] else f"{valid[c]}-{name}" for c in columns)
        for name, value in POISONS.items()
    ]
    failures = validate(context, suite, spark.createDataFrame([tuple(valid.values()), *poisoned], schema))

    for column in BOUNDED_ROW_COLUMNS[layer]:
        named = [f for f in failures if f" on {column}:" in f and "not_be_null" in f]
        assert len(named) == 1, f"no not-null failure named {column} in {failures}"
        assert "3 of 4 rows null, NaN or infinite" in named[0] and all(p in named[0] for p in POISONS), named[0]


@pytest.mark.parametrize("layer", list(ROWS))
def test_rows_suites_say_the_same_on_the_pandas_and_the_spark_engine(spark, context, layer):
    """The gate validates a small batch's per-row frame on pandas, a large one on Spark
    (metrics.row_frame, quality.pandas_max_rows): both must pass and fail the same rows alike."""
    conf = load_conf(["conf/local.yaml"])
    gold, valid = ROWS[layer]
    suite = suites.rows_suite(layer, conf, gold)
    columns = list(valid)
    schema = ", ".join(f"{c} {'double' if isinstance(valid[c], float) else 'string'}" for c in columns)
    bad = {**valid, "image_id": "twice"}
    for column in BOUNDED_ROW_COLUMNS[layer]:
        bad[column] = -1.0  # out of every bound (lengths, counts, sizes and feature values alike)
    rows = [tuple(valid.values()), tuple(bad.values()), tuple({**bad, "image_id": "twice"}.values()), tuple({**valid, "image_id": None}.values())]
    frame = spark.createDataFrame(rows, schema)
    on_spark = metrics.row_frame(frame, len(rows), pandas_max_rows=0)
    on_pandas = metrics.row_frame(frame, len(rows), pandas_max_rows=len(rows))
    assert not hasattr(on_spark, "iloc") and hasattr(on_pandas, "iloc")
    failures = validate(context, suite, on_spark)
    assert any("to_be_unique" in f for f in failures) and any("to_be_between" in f for f in failures), failures
    assert validate(context, suite, on_pandas) == failures
    on_spark.unpersist()


@pytest.mark.parametrize(
    "layer, gold", [("bronze", None), ("silver", None), ("gold", GOLD_CHOSEN), ("gold", GOLD_FIXED)], ids=["bronze", "silver", "gold", "gold-fixed-k"]
)
def test_totals_suites_fail_each_numeric_column_holding_nan_or_infinity(context, layer, gold):
    conf = load_conf(["conf/local.yaml"])
    _, valid = TOTALS[layer]
    suite = suites.totals_suite(layer, conf, gold)
    assert bounded_columns(suite) == BOUNDED_TOTALS[layer]
    assert validate(context, suite, metrics.totals_frame(valid)) == []

    for column, (name, value) in itertools.product(sorted(BOUNDED_TOTALS[layer]), POISONS.items()):
        failures = validate(context, suite, metrics.totals_frame({**valid, column: value}))
        assert failures, f"{layer}_totals passed with {column}={name}"
        assert f"{layer}_totals: expect_column_values_to_not_be_null on {column}: observed null, NaN or infinite" in failures, (
            f"{column}={name}: {failures}"
        )
        assert all(f" on {column}" in f for f in failures), f"{column}={name}: another column failed too: {failures}"


def test_non_finite_as_null_maps_only_floating_point_nan_and_infinity(spark):
    frame = spark.createDataFrame(
        [("a", 1, 1.5, math.nan), ("b", 2, math.inf, -math.inf), ("c", None, None, 0.0)], "id string, n long, x double, y float"
    )
    rows = [tuple(r) for r in suites.non_finite_as_null(frame).orderBy("id").collect()]
    assert rows == [("a", 1, 1.5, None), ("b", 2, None, None), ("c", None, None, 0.0)]
    assert suites.non_finite_as_null(frame).schema == frame.schema

    totals = suites.non_finite_as_null(metrics.totals_frame({"rows": 3, "rate": math.inf, "low": -math.inf, "ok": 0.5}))
    assert totals["rows"][0] == 3 and totals["ok"][0] == 0.5
    assert totals["rate"].isna()[0] and totals["low"].isna()[0]
