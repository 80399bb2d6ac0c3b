"""What a gate checks, derived in Spark from the staged tables: the per-row frame of the batch's
scalars (never the arrays themselves) and one row of counts over the batch, the quarantine rows
staged beside it and the published tables (reconciliation with the upstream layer, quarantine
rate, the model's facts). quality/gates.py hands them to the suites (quality/suites.py).
"""

from __future__ import annotations

from functools import reduce

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import lake, stages
from pipelines.config import Conf
from pipelines.layout import Layout
from pipelines.stages import ROW_ID


def row_frame(rows: DataFrame, batch_rows: int, pandas_max_rows: int) -> DataFrame | pd.DataFrame:
    """The per-row check frame the rows suite validates, non-finite numbers as nulls: collected to
    pandas when the batch has at most `pandas_max_rows` rows (GX's pandas engine evaluates every
    expectation in memory, where its Spark engine runs a job per expectation: the fixed cost of a
    small increment), else a persisted Spark frame (the caller unpersists it)."""
    from quality import suites

    if batch_rows <= pandas_max_rows:
        return suites.non_finite_as_null(rows.toPandas())
    return suites.non_finite_as_null(rows).persist()


def staged_quarantine(spark: SparkSession, layer: str, staged: lake.Staged) -> DataFrame:
    """The quarantine rows write_audit_publish staged beside the batch in this run (none: empty)."""
    rows = staged.tables.get("quarantine")
    if rows is None:
        return spark.createDataFrame([], lake.QUARANTINE_SCHEMA)
    return rows.where(F.col("stage") == layer)


def totals(
    spark: SparkSession, conf: Conf, stage: stages.Stage, batch: DataFrame, staged_quarantine: DataFrame,
    facts: stages.ModelFacts | None,
) -> dict[str, float | int | None]:
    """The counts of the `<layer>_totals` suite, computed in Spark and returned as one small dict."""
    from quality import suites

    layer = stage.name
    layout = Layout.from_conf(conf)
    published = layout.read(spark, layer)
    quarantine_table = layout.read(spark, "quarantine")
    after = suites.layer_after_publish(layer, published, batch)
    frame = suites.batch_counts(batch, staged_quarantine, _recorded_inputs(spark, layer, batch, published, quarantine_table))
    upstream = stage.upstream
    if upstream is None:
        frame = frame.crossJoin(suites.rows_after_publish(after))
    else:
        upstream_table = layout.read(spark, upstream)
        upstream_ids = (
            upstream_table.select(ROW_ID) if upstream_table is not None else spark.createDataFrame([], f"{ROW_ID} string")
        )
        quarantined = staged_quarantine.select(ROW_ID)
        if quarantine_table is not None:
            quarantined = quarantine_table.where(F.col("stage") == layer).select(ROW_ID).unionByName(quarantined)
        frame = frame.crossJoin(suites.reconciliation(upstream, upstream_ids, after, quarantined))
    if stage.suite.versioned:
        frame = frame.crossJoin(batch.agg(F.countDistinct("model_version").alias("model_versions")))
    metrics = frame.first().asDict()
    if facts is not None:
        metrics.update(array_length=facts.array_length, **{check.metric: check.value for check in facts.checks})
    return metrics


def quarantine_examples(staged_quarantine: DataFrame, limit: int) -> list[str]:
    """'path: reason' for the first `limit` quarantine rows staged beside the batch (by path)."""
    rows = staged_quarantine.select("path", "reason").orderBy("path").limit(limit).collect()
    return [f"{row['path']}: {row['reason']}" for row in rows]


def naming(failure: str, quarantined: list[str]) -> str:
    """For a failed quarantine rate, the files behind it (appended to its failure line)."""
    if "batch_quarantine_rate" not in failure or not quarantined:
        return ""
    return f"; quarantined in this batch (first {len(quarantined)}): " + "; ".join(quarantined)


def _recorded_inputs(
    spark: SparkSession, layer: str, batch: DataFrame, published: DataFrame | None, quarantine: DataFrame | None
) -> DataFrame:
    """image_id and path (null where unknown) of every input whose content the layer holds once the
    batch is published (a duplicate of a batch row loses nothing), and the paths it already
    quarantined. Quarantined contents are not matched: every empty file has the same hash, and fifty
    empty uploads must count as fifty rejections, not as one seen before."""
    frames = [batch.select(ROW_ID, F.lit(None).cast("string").alias("path"))]
    if published is not None:
        path = F.col("path") if "path" in published.columns else F.lit(None).cast("string")
        frames.append(published.select(ROW_ID, path.alias("path")))
    if quarantine is not None:
        frames.append(quarantine.where(F.col("stage") == layer).select(F.lit(None).cast("string").alias(ROW_ID), "path"))
    return reduce(DataFrame.unionByName, frames)


def totals_frame(metrics: dict) -> pd.DataFrame:
    """The totals as the one-row frame GX validates: counts as integers, ratios and unknowns as floats.

    A pandas frame: the counts are already computed (in Spark) and collected, and GX validates one
    row on pandas in ~0.2 s where a one-row Spark frame took ~2 s (a Spark job per metric).
    """

    def is_count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return pd.DataFrame(
        {
            key: pd.Series([value], dtype="int64") if is_count(value)
            else pd.Series([None if value is None else float(value)], dtype="float64")
            for key, value in metrics.items()
        }
    )
