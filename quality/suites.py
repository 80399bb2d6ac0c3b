"""The expectation suites, as code, and the Spark derivations they are evaluated on.

Every layer has two suites (docs/quality.md lists each expectation and why):

- `<layer>_rows`: one row per row of the staged batch. Array columns are never handed to GX nor
  collected: Spark derives per-row scalars first (length, count of null/NaN/infinite elements,
  smallest and largest finite element), and GX checks those.
- `<layer>_totals`: a single row of counts computed in Spark over the batch, the quarantine rows
  staged beside it and the published tables: quarantine rate of the batch, rows once published,
  the reconciliation with the upstream layer (every upstream image has exactly one row or one
  quarantine row) and, for a versioned layer, one model per batch and the model's own checks
  (gold: the variance reached by the k components; the classifier: its Test accuracy and labels).

What each layer's rows suite checks is declared with its stage (pipelines/stages.py, `Suite`);
this module turns a declaration into expectations. The functions building DataFrames are pure
(DataFrame in, DataFrame out); the suites are built from conf thresholds and from the facts a
versioned stage gives about its model (ModelFacts: gold's k, the classifier's labels), so the same code is the reviewed definition of
the checks and what runs.

NaN and infinity: GX's ExpectColumnValuesToBeBetween skips missing values (null, and on pandas NaN
too) and compares the rest, and Spark orders NaN above every number, so a NaN passed a minimum-only
bound (gold's variance reached NaN once and the gate said 13 of 13). Every numeric column a suite
bounds is therefore also expected not null (`_between`), and the gate hands GX the frames through
`non_finite_as_null`, which turns NaN and +-inf into null: a non-finite number fails the not-null
expectation of its column, on Spark and on pandas alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import great_expectations as gx
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import Conf
from pipelines.stages import ROW_ID, Array, ModelFacts, get


# ---------------------------------------------------------------- derived columns


def array_checks(column: str) -> list[Column]:
    """Per-row scalars of an array column: `<c>_length` (0 for a null array), `<c>_invalid_values`
    (null, NaN or infinite elements), `<c>_min` / `<c>_max` over the finite elements (null when none).
    """
    values = F.col(column)
    infinity = F.lit(float("inf"))
    is_invalid = lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == infinity)  # noqa: E731
    finite = F.filter(values, lambda x: ~is_invalid(x))
    return [
        F.when(values.isNull(), F.lit(0)).otherwise(F.size(values)).alias(f"{column}_length"),
        F.when(values.isNull(), F.lit(0)).otherwise(F.size(F.filter(values, is_invalid))).alias(f"{column}_invalid_values"),
        F.array_min(finite).cast("double").alias(f"{column}_min"),
        F.array_max(finite).cast("double").alias(f"{column}_max"),
    ]


def non_finite_as_null(frame: DataFrame | pd.DataFrame) -> DataFrame | pd.DataFrame:
    """The frame with every NaN, +inf and -inf of its floating-point columns replaced by null.

    What the gate validates (Spark per-row frame and pandas totals alike): GX's between checks skip
    nulls, so each bounded column also has a not-null expectation, and a non-finite value must be a
    null for that expectation to catch it (pandas already counts NaN as null; Spark does not).
    """
    if isinstance(frame, pd.DataFrame):
        return frame.replace([math.inf, -math.inf], math.nan)
    infinity = F.lit(float("inf"))
    return frame.select(
        *[
            F.when(F.isnan(field.name) | (F.abs(field.name) == infinity), F.lit(None)).otherwise(F.col(field.name)).alias(field.name)
            if isinstance(field.dataType, (T.FloatType, T.DoubleType)) else F.col(field.name)
            for field in frame.schema.fields
        ]
    )


def row_checks(layer: str, batch: DataFrame) -> DataFrame:
    """The small per-row frame the `<layer>_rows` suite validates (no binary, no arrays): the row id,
    the declared scalar columns and the per-row scalars of the declared array column."""
    suite = get(layer).suite
    arrays = array_checks(suite.array.name) if suite.array is not None else []
    return batch.select(ROW_ID, *[column.name for column in suite.columns], *arrays)


def batch_counts(batch: DataFrame, staged_quarantine: DataFrame, recorded: DataFrame | None = None) -> DataFrame:
    """One row: batch_rows, batch_quarantined, batch_quarantined_known and batch_quarantine_rate.

    The rate counts what is new and lost in this run: a quarantine row for an input the layer
    records anyway (`recorded`: image_id and path of the batch's rows and of the published rows,
    paths of the published quarantine rows), such as a duplicate of an accepted image, a file touched,
    rewritten, renamed or moved after ingestion, or a rejected file seen again, is counted in
    batch_quarantined_known, not as a rejection. Counted as one, a single changed file would fail
    every later gate, however many good images came with it. Rate: rejections over rejections plus
    rows (0 when both are 0).
    """
    quarantine = staged_quarantine.select(ROW_ID, "path")
    if recorded is None:
        flagged = quarantine.select(F.lit(False).alias("known"))
    else:
        ids = recorded.select(F.col(ROW_ID).alias("known_id")).where(F.col("known_id").isNotNull()).distinct()
        paths = recorded.select(F.col("path").alias("known_path")).where(F.col("known_path").isNotNull()).distinct()
        flagged = (
            quarantine.join(ids, quarantine[ROW_ID] == ids["known_id"], "left")
            .join(paths, quarantine["path"] == paths["known_path"], "left")
            .select((F.col("known_id").isNotNull() | F.col("known_path").isNotNull()).alias("known"))
        )
    rows = batch.agg(F.count(F.lit(1)).alias("batch_rows"))
    quarantined = flagged.agg(
        F.count(F.lit(1)).alias("batch_quarantined"), F.count(F.when(F.col("known"), 1)).alias("batch_quarantined_known")
    )
    new = F.col("batch_quarantined") - F.col("batch_quarantined_known")
    total = F.col("batch_rows") + new
    return rows.crossJoin(quarantined).withColumn(
        "batch_quarantine_rate", F.when(total > 0, new / total).otherwise(F.lit(0.0))
    )


def rows_after_publish(layer_ids: DataFrame) -> DataFrame:
    """One row: rows_after_publish, the distinct images the layer holds once the batch is published."""
    return layer_ids.agg(F.countDistinct(ROW_ID).alias("rows_after_publish"))


def reconciliation(upstream: str, upstream_ids: DataFrame, layer_ids: DataFrame, quarantined_ids: DataFrame) -> DataFrame:
    """One row of counts proving that upstream = layer + quarantine, image by image.

    Inputs are `image_id` frames: the upstream layer's images, the layer's images once the batch is
    published, and the images the layer quarantined (published or staged). Output columns:
    `<upstream>_images`, rows_after_publish, quarantined_images, `unaccounted_<upstream>_images`
    (neither a row nor a quarantine row), rows_without_<upstream> (a row whose image the upstream
    layer does not have) and accounted_twice (both a row and a quarantine row).
    """

    flags = ("up", "row", "quarantined")

    def flagged(ids: DataFrame, flag: str) -> DataFrame:
        return ids.select(ROW_ID, *(F.lit(name == flag).alias(name) for name in flags))

    # One shuffle: every image id with the sets it is in (the same as three distinct id sets joined
    # full outer, which took five shuffles, each a fixed cost of the gate).
    joined = (
        flagged(upstream_ids, "up").unionByName(flagged(layer_ids, "row")).unionByName(flagged(quarantined_ids, "quarantined"))
        .where(F.col(ROW_ID).isNotNull())
        .groupBy(ROW_ID).agg(*(F.bool_or(name).alias(name) for name in flags))
    )

    def count_where(condition: Column) -> Column:
        return F.count(F.when(condition, 1))

    up, row, quarantined = F.col("up"), F.col("row"), F.col("quarantined")
    return joined.agg(
        count_where(up).alias(f"{upstream}_images"),
        count_where(row).alias("rows_after_publish"),
        count_where(quarantined).alias("quarantined_images"),
        count_where(up & ~row & ~quarantined).alias(f"unaccounted_{upstream}_images"),
        count_where(row & ~up).alias(f"rows_without_{upstream}"),
        count_where(row & quarantined).alias("accounted_twice"),
    )


def layer_after_publish(layer: str, published: DataFrame | None, batch: DataFrame) -> DataFrame:
    """The `image_id`s the layer holds once the batch is published.

    Publishing inserts the batch rows whose image is absent, so it is published + batch; a versioned
    layer (gold) holds one model version at a time (a fit replaces the table, an incremental run
    projects with the current version), so only the rows of the batch's model version count.
    """
    versioned = get(layer).suite.versioned
    columns = [ROW_ID, "model_version"] if versioned else [ROW_ID]
    rows = batch.select(*columns)
    if published is not None:
        rows = published.select(*columns).unionByName(rows)
    if versioned:
        versions = batch.select("model_version").distinct()
        rows = rows.join(versions, "model_version", "left_semi")
    return rows.select(ROW_ID)


# ---------------------------------------------------------------- suites


def rows_suite(layer: str, conf: Conf, facts: ModelFacts | None = None) -> gx.ExpectationSuite:
    """The row id not null and unique, then the declared columns and array (pipelines/stages.py)."""
    suite = get(layer).suite
    expectations = [
        gx.expectations.ExpectColumnValuesToNotBeNull(column=ROW_ID),
        gx.expectations.ExpectColumnValuesToBeUnique(column=ROW_ID),
    ]
    for column in suite.columns:
        if column.positive is not None:
            expectations += _between(column.name, 0, None, column.positive, strict_min=True)
            continue
        expectations.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=column.name))
        if column.unique:
            expectations.append(gx.expectations.ExpectColumnValuesToBeUnique(column=column.name))
    if suite.array is not None:
        expectations += _declared_array(suite.array, conf, facts)
    return gx.ExpectationSuite(name=f"{layer}_rows", expectations=expectations)


def _declared_array(array: Array, conf: Conf, facts: ModelFacts | None) -> list:
    """A declared array's checks: its length from conf, or the model's own length for a versioned layer."""
    if array.length is not None:
        length, version = conf[array.length], None
    elif facts is not None and facts.array_length is not None:
        length, version = facts.array_length, facts.model_version
    else:
        return _array_expectations(array.name, None, None, None, "length unknown: the model version has no records")
    bound = lambda key: conf[key] if isinstance(key, str) else key  # noqa: E731
    note = array.note.format(length=length, version=version)
    return _array_expectations(array.name, length, bound(array.low), bound(array.high), note)


def _between(column: str, low: float | None, high: float | None, notes: str, **bounds) -> list:
    """A bounded numeric column: not null, NaN nor infinite (see non_finite_as_null), and within bounds.

    GX's between check alone passes a null, a pandas NaN, a Spark NaN above `low`, and +inf above
    `low`: the not-null expectation, on the frame whose non-finite values became null, fails them.
    """
    return [
        gx.expectations.ExpectColumnValuesToNotBeNull(
            column=column, notes=f"{notes} Null, NaN and infinity fail here (the between check skips nulls).",
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, notes=notes, **bounds),
    ]


def _array_expectations(column: str, length: int | None, low: float | None, high: float | None, note: str) -> list:
    checks = []
    if length is not None:
        checks += _between(f"{column}_length", length, length, f"{column}_length: number of values in `{column}` (0 when null). {note}.")
    checks += _between(f"{column}_invalid_values", 0, 0, f"{column}_invalid_values: null, NaN or infinite values in `{column}`.")
    if low is not None:
        checks += _between(f"{column}_min", low, None, f"{column}_min: smallest finite value of `{column}`. {note}.")
    if high is not None:
        checks += _between(f"{column}_max", None, high, f"{column}_max: largest finite value of `{column}`. {note}.")
    return checks


def totals_suite(
    layer: str, conf: Conf, facts: ModelFacts | None = None, quarantined: Sequence[str] = ()
) -> gx.ExpectationSuite:
    """`quarantined`: the first quarantine rows of a batch over its rate ('path: reason'), named in the
    rate's notes so that the suite's Data Docs page says which files are behind the failure."""
    rate_key = f"quality.{layer}.max_quarantine_rate"
    named = f" Quarantined in this batch (first {len(quarantined)}): " + "; ".join(quarantined) + "." if quarantined else ""
    expectations = [
        *_between(
            "batch_quarantine_rate", 0.0, conf[rate_key],
            f"Share of this run's new inputs the stage quarantined (inputs the layer already recorded, such as "
            f"a file changed or renamed after ingestion, are not counted); tolerated up to {rate_key}.{named}",
        ),
        *_between("rows_after_publish", 1, None, "The layer is not empty once this batch is published."),
    ]
    upstream = get(layer).upstream
    if upstream is not None:
        expectations += [
            *_between(f"unaccounted_{upstream}_images", 0, 0, f"Every {upstream} image has a {layer} row or a {layer} quarantine row."),
            *_between(f"rows_without_{upstream}", 0, 0, f"No {layer} row for an image {upstream} does not hold."),
            *_between("accounted_twice", 0, 0, f"No image is both a {layer} row and a {layer} quarantine row."),
        ]
    if get(layer).suite.versioned:
        expectations += _between("model_versions", 1, 1, f"The {layer} rows of the batch come from one model.")
        for check in facts.checks if facts is not None else ():
            expectations += _between(check.metric, check.low, check.high, check.note)
    return gx.ExpectationSuite(name=f"{layer}_totals", expectations=expectations)
