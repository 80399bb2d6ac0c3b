"""Gold: reduce silver's image features with a PCA fitted in Spark ML, incrementally.

read conf -> read silver -> either fit (first run, or --refit): center (and optionally scale) the
features, fit a PCA, choose k from the explained variance, save the model, rewrite gold in one
commit; or project only the silver rows that have no gold row yet with the current model ->
bring the CSV and Parquet exports in line with gold, one part per run (pipelines/exports.py) ->
plot the explained variance and PC1/PC2 of a few fruits, once per model (pipelines/gold_plots.py).

Decisions (see docs/gold.md):
- The PCA model, its choice of k, where it is saved and its registry are in pipelines/gold_model.py;
  this module is the stage: which silver rows, the gold rows, the commits.
- A fit saves its model's files, then commits its registry row, its variance rows, the new gold
  (one Delta overwrite: readers see the old or the new version, never a mix) and its rejections in
  one lake.write_audit_publish, in that order, after one audit of them all. An incremental run
  inserts with it (exactly-once).
- Silver rows whose features are null, empty, of another length than the model's, or not finite
  go to the shared quarantine table with stage 'gold' and a reason.
- A run costs what its new rows cost: the exports get one part per run (pipelines/exports.py), the
  plots describe the model and are drawn when it is fitted (or found missing), and a run with
  nothing new loads no model and writes nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from pyspark import StorageLevel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import exports, gold_plots, lake, pca, runtimes
from pipelines.cli import execute_stage
from pipelines.options import stage_parser
from pipelines.config import Conf
from pipelines.gold_model import (
    PCA_COL,
    REGISTRY_SCHEMA,
    VECTOR_COL,
    GoldInputError,
    GoldModel,
    GoldSettings,
    GoldStateError,
    changed_settings,
    current_model,
    fit_model,
    model_facts,
    model_version_for,
    refit_reasons,
    variance_records,
)
from pipelines.layout import Layout
from pipelines.stages import ModelFacts

STAGE = "gold"

GOLD_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), True),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("pca", T.ArrayType(T.DoubleType(), False), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("run_id", T.StringType(), True),
    ]
)
VARIANCE_SCHEMA = T.StructType(
    [
        T.StructField("component", T.IntegerType(), False),
        T.StructField("explained_variance_ratio", T.DoubleType(), False),
        T.StructField("cumulative", T.DoubleType(), False),
        T.StructField("model_version", T.StringType(), False),
    ]
)
VARIANCE_KEYS = ("model_version", "component")
SILVER_COLUMNS = ("image_id", "label", "split", "features", "model_weights_sha256")
# What computed a row's features (pipelines.runtimes.model_identity): what the registry's fit_feature_models lists.
_FEATURE_MODEL_COL = "feature_model"


@dataclass(frozen=True)
class GoldResult:
    """What one gold run did and the model gold now holds: its summary line, the refit advice and
    the bench read it. A run that could not fit (fewer than two valid rows) has a `note` and no model."""

    mode: str  # "fit" (no model yet), "refit" (--refit) or "incremental" (new rows projected)
    rejected: int  # gold quarantine rows recorded under this run id
    rows_written: int  # gold rows written by this run
    gold_rows: int  # rows in gold after the run
    k: int | None  # principal components kept by the model (None: not fitted)
    variance_reached: float | None  # explained variance of those k components (None: not fitted)
    variance_target: float | None  # gold.variance_target the model chose k by (None: gold.k fixed it)
    seconds: float  # the run's wall-clock seconds
    note: str | None = None  # why no model was fitted (None: there is one)
    model_version: str | None = None  # version of the model gold's rows come from
    k_fitted: int | None = None  # components the PCA was fitted with (k of them are kept)
    feature_dim: int | None = None  # feature length the model expects
    fixed_k: int | None = None  # gold.k when it fixed k (None: chosen by the variance target)
    fit_rows: int | None = None  # silver rows the model was fitted on
    refit_reasons: list[str] = field(default_factory=list)  # why a refit is recommended (empty: it is not)
    exports: dict | None = None  # exports.sync: the export roots, the parts `written` and the paths `removed`
    plots: dict[str, str] | None = None  # the model's plots by name, with their locations


# ---------------------------------------------------------------- row transforms


def unquarantined_silver_rows(silver: DataFrame, quarantine: DataFrame) -> DataFrame:
    """Silver rows gold never rejected (what a fit uses): an image is in gold or in quarantine, not both."""
    rejected = quarantine.where(F.col("stage") == STAGE).select("image_id")
    rows = silver.select(*SILVER_COLUMNS, runtimes.model_identity_column(silver).alias(_FEATURE_MODEL_COL))
    return rows.dropDuplicates(["image_id"]).join(rejected, "image_id", "left_anti")


def new_silver_rows(silver: DataFrame, gold: DataFrame, quarantine: DataFrame) -> DataFrame:
    """Silver rows with neither a gold row nor a gold quarantine row (what an incremental run handles)."""
    return unquarantined_silver_rows(silver, quarantine).join(gold.select("image_id"), "image_id", "left_anti")


def check_features(rows: DataFrame, feature_dim: int | None) -> DataFrame:
    """Add `reason`: null when the row's features can be projected, else why they cannot."""
    size = F.size("features")
    non_finite = F.exists("features", lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    reason = (
        F.when(F.col("features").isNull(), F.lit("no_features: the silver row has null features"))
        .when(size == 0, F.lit("no_features: the silver row has an empty feature array"))
        .when(
            size != F.lit(feature_dim if feature_dim is not None else -1),
            F.concat(
                F.lit("wrong_dimension: "), size.cast("string"),
                F.lit(f" features where the PCA model expects {feature_dim}; if silver's feature model "
                      f"changed, run gold with --refit"),
            ),
        )
        .when(non_finite, F.lit("non_finite: the features contain NaN, infinity or null values"))
    )
    return rows.withColumn("reason", reason)


def with_feature_vectors(rows: DataFrame) -> DataFrame:
    """The accepted rows with their features as ML vectors (what the saved pipeline reads)."""
    return rows.where(F.col("reason").isNull()).select(
        "image_id", "label", "split", "model_weights_sha256", array_to_vector("features").alias(VECTOR_COL)
    )


def gold_rows(projected: DataFrame, model_version: str, run_id: str) -> DataFrame:
    return projected.select(
        "image_id", "label", "split",
        vector_to_array(PCA_COL, "float64").alias("pca"),
        F.lit(model_version).alias("model_version"),
        F.lit(run_id).alias("run_id"),
    )


def quarantine_rows(checked: DataFrame, run_id: str) -> DataFrame:
    """Rejected silver rows in the shared quarantine schema (gold has no file path: join bronze on image_id)."""
    return checked.where(F.col("reason").isNotNull()).select(
        "image_id", F.lit(None).cast("string").alias("path"), F.lit(STAGE).alias("stage"), "reason",
        F.lit(None).cast("long").alias("source_size_bytes"), F.lit(None).cast("timestamp").alias("source_modified_at"),
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("recorded_at"),
    )


# ---------------------------------------------------------------- the fit's inputs, the gate's facts


def modal_dimension(rows: DataFrame) -> int | None:
    """The most common non-zero feature length (silver writes one length; others are anomalies)."""
    top = (
        rows.where(F.size("features") > 0)
        .groupBy(F.size("features").alias("dim"))
        .count()
        .orderBy(F.desc("count"), F.desc("dim"))
        .first()
    )
    return None if top is None else int(top["dim"])


def quality_facts(spark: SparkSession, conf: Conf, staged: lake.Staged) -> ModelFacts:
    """What gold's gate checks about the model of the staged batch (pipelines/stages.py: gold's
    `facts`): from the variance rows of the batch's model version and gold.* conf. A fit stages its
    variance rows beside the batch (nothing of it is published before the audit); an incremental
    run stages none, its model's rows are in the published table."""
    versions = [r[0] for r in staged.batch.select("model_version").distinct().limit(2).collect()]
    version = versions[0] if len(versions) == 1 else None
    ratios: list[float] = []
    variance = staged.table("gold_variance")
    if version is not None and variance is not None:
        ratios = [
            r[0]
            for r in variance.where(F.col("model_version") == version)
            .orderBy("component")
            .select("explained_variance_ratio")
            .collect()
        ]
    return model_facts(version, ratios, conf["gold.k"], conf["gold.variance_target"])


# ---------------------------------------------------------------- runs


def run(spark: SparkSession, conf: Conf, run_id: str, refit: bool = False, audit: lake.Audit | None = None) -> GoldResult:
    """One gold run; the result holds k, the variance reached and the target for the quality gate."""
    started = time.monotonic()
    settings = GoldSettings.from_conf(conf)
    layout = Layout.from_conf(conf)
    silver = layout.read(spark, "silver")
    if silver is None:
        raise FileNotFoundError(f"silver table '{layout.location('silver')}' does not exist: run `python -m pipelines.silver` first")
    gold = layout.read_or_empty(spark, "gold")
    model = None if refit else current_model(spark, conf, gold)
    if model is None:
        mode = "refit" if refit else "fit"
        model = _fit_and_replace(spark, conf, run_id, settings, silver, audit)
    else:
        mode = "incremental"
        _project_new_rows(spark, conf, run_id, silver, gold, model, audit)
    rejected = _rejected_by_run(spark, conf, run_id)
    if model is None:
        return GoldResult(
            mode=mode, rejected=rejected, rows_written=0, gold_rows=0, k=None, variance_reached=None,
            variance_target=settings.variance_target, note="not fitted: a PCA needs at least 2 valid silver rows",
            seconds=round(time.monotonic() - started, 1),
        )
    gold = spark.read.format("delta").load(layout.location("gold"))
    runs = exports.gold_runs(gold)
    rows_in_gold = sum(runs.values())
    refit_reasons = _refit_reasons(silver, gold, model, rows_in_gold, settings)
    synced = exports.sync(spark, conf, run_id, gold, model.k, runs)
    reports = layout.reports(STAGE, model.record["run_id"])
    plots = gold_plots.plot_model(spark, conf, gold, model, reports)
    return GoldResult(
        mode=mode,
        rejected=rejected,
        rows_written=runs.get((model.version, run_id), 0),
        gold_rows=rows_in_gold,
        model_version=model.version,
        k=model.k,
        k_fitted=model.record["k_fitted"],
        feature_dim=model.feature_dim,
        variance_reached=model.record["variance_reached"],
        variance_target=model.record["variance_target"],
        fixed_k=model.record["fixed_k"],
        fit_rows=model.record["fit_rows"],
        refit_reasons=refit_reasons,
        exports=synced,
        plots=plots,
        seconds=round(time.monotonic() - started, 1),
    )


def _fit_and_replace(
    spark: SparkSession, conf: Conf, run_id: str, settings: GoldSettings, silver: DataFrame, audit: lake.Audit | None
) -> GoldModel | None:
    """Fit on every valid silver row gold has not quarantined before, save the model, then register
    it and replace gold in one write-audit-publish.

    Returns the new model, or None when fewer than two valid rows exist (a covariance needs two;
    the silver rows then stay pending for a later run). Rows without variance (all the same
    features) raise GoldInputError from the fit, which runs before anything is written. The
    model's files are saved first (files, not a table: no transaction holds them); then one
    lake.write_audit_publish stages the registry row, the variance rows, the new gold rows and the
    rejected rows, audits them together (the quality gate reads the variance of the batch's version
    from the staged rows) and publishes them in that order: the registry and variance rows
    inserted, gold replaced, the rejections inserted. A failed audit publishes nothing; a killed
    run leaves at worst a registry row and variance rows no gold row names yet, never a gold row
    without its model; a quarantine row lost by a kill is found again by the next run. The model
    folder of a refused or killed fit is an orphan: harmless, as only a version named by gold rows
    and registered is ever loaded (gold_model.current_model), and each fit saves under a new version.
    """
    layout = Layout.from_conf(conf)
    quarantine = layout.read_or_empty(spark, "quarantine")
    candidates = unquarantined_silver_rows(silver, quarantine)
    feature_dim = modal_dimension(candidates)
    checked = check_features(candidates, feature_dim).cache()
    valid = F.col("reason").isNull()
    summary = checked.agg(
        F.count(F.when(valid, 1)).alias("rows"),
        F.count(F.when(~valid, 1)).alias("rejected"),
        F.bit_xor(F.when(valid, F.xxhash64("image_id"))).alias("ids_xor"),
        F.collect_set(F.when(valid, F.col("label"))).alias("labels"),
        F.collect_set(F.when(valid, F.col(_FEATURE_MODEL_COL))).alias("feature_models"),
    ).first()
    fit_rows = int(summary["rows"])
    fitted = None
    if fit_rows >= 2:  # fitted before anything is written: a refused fit (GoldInputError) leaves no trace
        vectors = with_feature_vectors(checked)
        try:
            fitted = fit_model(vectors, settings, feature_dim, fit_rows)
        except GoldInputError:
            checked.unpersist()
            raise
    batches: dict[str, lake.Batch] = {}
    model = None
    if fitted is not None:
        pipeline, k, k_fitted = fitted
        fitted_at = datetime.now(timezone.utc)
        fingerprint = f"{summary['ids_xor']}|{fit_rows}|{feature_dim}|{k}|{k_fitted}|{settings.standardize}"
        version = model_version_for(fitted_at, fit_rows, run_id, fingerprint)
        pipeline.write().overwrite().save(layout.pca_model(version))
        explained = pipeline.stages[1].explainedVariance.toArray()
        record = {
            "model_version": version, "fitted_at": fitted_at, "run_id": run_id, "fit_rows": fit_rows,
            "feature_dim": feature_dim, "k": k, "k_fitted": k_fitted,
            "variance_target": None if settings.fixed_k is not None else settings.variance_target,
            "fixed_k": settings.fixed_k, "variance_reached": float(np.sum(explained[:k])),
            "standardize": settings.standardize,
            "fit_labels": sorted(summary["labels"]), "fit_feature_models": sorted(summary["feature_models"]),
        }
        # Declared in publish order: what the gold rows name first, gold, then its rejections.
        batches.update(
            pca_registry=lake.Batch(spark.createDataFrame([record], REGISTRY_SCHEMA), ("model_version",)),
            gold_variance=lake.Batch(spark.createDataFrame(variance_records(explained, version), VARIANCE_SCHEMA), VARIANCE_KEYS),
            gold=lake.Batch(gold_rows(pipeline.transform(vectors), version, run_id), replace=True),
        )
        model = GoldModel(version, layout.pca_model(version), record, fitted=pipeline)
    if summary["rejected"]:
        batches["quarantine"] = lake.Batch(quarantine_rows(checked, run_id), lake.QUARANTINE_KEYS)
    if batches:  # without a model, only the rejections (nothing to audit: the gate validates gold rows)
        lake.write_audit_publish(spark, conf, STAGE, run_id, batches, audit=audit if model is not None else None)
    checked.unpersist()
    return model


def _project_new_rows(
    spark: SparkSession, conf: Conf, run_id: str, silver: DataFrame, gold: DataFrame, model: GoldModel,
    audit: lake.Audit | None,
) -> None:
    """Project the silver rows not yet in gold (nor quarantined by gold) with the current model
    (none: the model is not even loaded, nothing is staged or committed).

    A model whose components are not orthonormal is refused: models fitted before gold's PCA was
    made exact (Spark's PCA.fit on fewer rows than features) can be, and their scores are not
    principal components, so adding rows to them would only spread the damage.
    """
    quarantine = Layout.from_conf(conf).read_or_empty(spark, "quarantine")
    new = new_silver_rows(silver, gold, quarantine)
    if new.isEmpty():
        return
    problem = pca.components_problem(model.pipeline.stages[1].pc.toArray())
    if problem is not None:
        raise GoldStateError(
            f"model {model.version} used by gold ('{model.location}') cannot project new rows: {problem}. It was "
            "fitted by Spark's PCA.fit, wrong for fits with fewer rows than features (docs/gold.md); run gold with "
            "--refit to fit an exact model on all of silver"
        )
    # Persisted: the check of each row is computed once for the rejections' test and both batches.
    checked = check_features(new, model.feature_dim).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        none_rejected = checked.where(F.col("reason").isNotNull()).isEmpty()
        rows = gold_rows(model.pipeline.transform(with_feature_vectors(checked)), model.version, run_id)
        lake.write_audit_publish(
            spark, conf, STAGE, run_id,
            {  # the rejections first, gold last (lake.write_audit_publish: order)
                "quarantine": lake.Batch(quarantine_rows(checked, run_id), lake.QUARANTINE_KEYS, empty=none_rejected),
                "gold": lake.Batch(rows, ("image_id",)),
            },
            audit=audit,
        )
    finally:
        checked.unpersist()


def _rejected_by_run(spark: SparkSession, conf: Conf, run_id: str) -> int:
    """Gold quarantine rows recorded under this run id (counted in the table: exact even on a resume)."""
    quarantine = Layout.from_conf(conf).read(spark, "quarantine")
    if quarantine is None:
        return 0
    return quarantine.where((F.col("stage") == STAGE) & (F.col("run_id") == run_id)).count()


def _refit_reasons(silver: DataFrame, gold: DataFrame, model: GoldModel, gold_rows_count: int, settings: GoldSettings) -> list[str]:
    gold_labels = {r["label"] for r in gold.select("label").distinct().collect()}
    silver_models = {r[0] for r in silver.select(runtimes.model_identity_column(silver)).distinct().collect()}
    return refit_reasons(
        model.record["fit_rows"], gold_rows_count, settings.refit_fraction,
        sorted(gold_labels - set(model.record["fit_labels"]) - {None}),
        sorted(silver_models - set(model.record["fit_feature_models"]) - {None}),
        changed_settings(model.record, settings),
    )


# ---------------------------------------------------------------- command line


def summary_line(result: GoldResult, run_id: str) -> str:
    if result.note:
        return f"gold run {run_id}: {result.mode}, {result.note}, rejected {result.rejected}, {result.seconds} s"
    target = f"target {result.variance_target:g}" if result.variance_target is not None else f"fixed k {result.fixed_k}"
    return (
        f"gold run {run_id}: {result.mode}, model {result.model_version}, k={result.k} of {result.feature_dim} "
        f"features (variance {result.variance_reached:.4f}, {target}), gold rows {result.gold_rows} "
        f"(written {result.rows_written}, rejected {result.rejected}), {result.seconds} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--refit", action="store_true",
        help="fit a new model on all of silver and rewrite gold with it in one commit (docs/gold.md: when to refit)",
    )
    args = parser.parse_args(argv)
    code, result = execute_stage(
        STAGE, args, lambda spark, conf, run_id, audit: run(spark, conf, run_id, refit=args.refit, audit=audit),
        summary_line, input_errors=(GoldStateError, GoldInputError, pca.DecompositionError, exports.ExportError), context=lambda conf: {"refit": args.refit}, force=args.refit,
    )
    if isinstance(result, GoldResult) and result.refit_reasons:
        print(f"gold: refit recommended ({'; '.join(result.refit_reasons)}): run python -m pipelines.gold --refit")
    return code


if __name__ == "__main__":
    sys.exit(main())
