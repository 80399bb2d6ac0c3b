"""Gold: reduce silver's image features with a PCA fitted in Spark ML, incrementally.

read conf -> read silver -> either fit (first run, or --refit): center (and optionally scale) the
features, fit a PCA, choose k from the explained variance, save the model, rewrite gold in one
commit; or project only the silver rows that have no gold row yet with the current model ->
bring the CSV and Parquet exports in line with gold, one part per run (pipelines/exports.py) ->
plot the explained variance and PC1/PC2 of a few fruits, once per model (pipelines/gold_plots.py).

Decisions (see docs/gold.md):
- The PCA is exact (pipelines/pca.py): Spark computes the covariance in a distributed pass, NumPy
  eigendecomposes that d x d matrix on the driver and the result is checked before it is saved;
  Spark's own PCA.fit returned wrong, run-dependent components when the fit had fewer rows than
  features. Only d x d objects ever reach the driver, never the feature matrix. The explained
  variance is each component's share of the total variance (`PCAModel.explainedVariance` of the
  model built from it). The PCA is fitted once with the most
  components allowed (min(d, rows, gold.max_k)), k is the smallest count reaching
  gold.variance_target (or gold.k), and a `VectorSlicer` keeps the first k outputs: the top-k
  components of a wider fit are those of a k fit, so one fit (one eigendecomposition) is enough.
- Gold stores principal-component scores of the *centered* features: a `StandardScaler` with
  withMean=true always runs before the PCA (Spark's PCA itself does not center when it projects),
  and its fit-time mean is part of the saved model, so new rows are centered the same way.
- The saved model is a `PipelineModel` [StandardScalerModel, PCAModel, VectorSlicer] under
  <lake.root>/<lake.models>/<gold.models_dir>/<model_version>. The current version is the one in
  the gold table (all gold rows share it); the registry Delta table beside the models records each
  fit (rows, labels, k, variance) for the refit policy.
- A fit rewrites gold with one Delta overwrite (lake.write_audit_publish with replace=True): readers
  see the old or the new version, never a mix. An incremental run inserts with it (exactly-once).
- Silver rows whose features are null, empty, of another length than the model's, or not finite
  go to the shared quarantine table with stage 'gold' and a reason.
- A run costs what its new rows cost: the exports get one part per run (pipelines/exports.py), the
  plots describe the model and are drawn when it is fitted (or found missing), and a run with
  nothing new loads no model and writes nothing.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import StandardScaler, VectorSlicer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import exports, gold_plots, lake, pca, runtimes
from pipelines.cli import execute_stage, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.stages import ModelCheck, ModelFacts

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
# One row per fit: what later runs need to project with the model and to judge when to refit.
REGISTRY_SCHEMA = T.StructType(
    [
        T.StructField("model_version", T.StringType(), False),
        T.StructField("fitted_at", T.TimestampType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("fit_rows", T.LongType(), False),
        T.StructField("feature_dim", T.IntegerType(), False),
        T.StructField("k", T.IntegerType(), False),
        T.StructField("k_fitted", T.IntegerType(), False),
        T.StructField("variance_target", T.DoubleType(), True),
        T.StructField("fixed_k", T.IntegerType(), True),
        T.StructField("variance_reached", T.DoubleType(), False),
        T.StructField("standardize", T.BooleanType(), False),
        T.StructField("fit_labels", T.ArrayType(T.StringType(), False), False),
        T.StructField("fit_feature_models", T.ArrayType(T.StringType(), False), False),
    ]
)
SILVER_COLUMNS = ("image_id", "label", "split", "features", "model_weights_sha256")
# What computed a row's features (pipelines.runtimes.model_identity): what the registry's fit_feature_models lists.
_FEATURE_MODEL_COL = "feature_model"

# Column names inside the saved PipelineModel (part of the persisted model: keep them stable).
_VECTOR_COL, _CENTERED_COL, _COMPONENTS_COL, _PCA_COL = "features_vector", "features_centered", "components", "pca_vector"
# Rounding slack above 1.0 for a sum of explained-variance ratios (shares of one total).
VARIANCE_TOLERANCE = 1e-6


class GoldStateError(RuntimeError):
    """The lake is not in a state gold can continue from; the message says which table and what to do."""


class GoldInputError(ValueError):
    """Silver's rows cannot give a PCA (no variance to explain); the message says why and what to do."""


@dataclass(frozen=True)
class GoldSettings:
    """The `gold.*` settings, checked once (conf/base.yaml types them; the ranges are checked here)."""

    variance_target: float
    fixed_k: int | None
    max_k: int
    standardize: bool
    refit_fraction: float

    @classmethod
    def from_conf(cls, conf: Conf) -> "GoldSettings":
        target, fixed_k, max_k = conf["gold.variance_target"], conf["gold.k"], conf["gold.max_k"]
        if not 0.0 < target <= 1.0:
            raise ConfError(f"gold.variance_target={target} must be in (0, 1], for example 0.95")
        if fixed_k is not None and (isinstance(fixed_k, bool) or not isinstance(fixed_k, int) or fixed_k < 1):
            raise ConfError(f"gold.k={fixed_k!r} must be a positive integer, or null to choose k from gold.variance_target")
        if max_k < 1:
            raise ConfError(f"gold.max_k={max_k} must be at least 1")
        if conf["gold.refit_fraction"] < 0:
            raise ConfError(f"gold.refit_fraction={conf['gold.refit_fraction']} must be >= 0")
        return cls(target, fixed_k, max_k, conf["gold.standardize"], conf["gold.refit_fraction"])


@dataclass(frozen=True)
class GoldModel:
    """A fitted PCA model and its registry record; the saved pipeline is loaded on first use (a run
    with nothing new to project needs only the record)."""

    version: str
    location: str
    record: dict
    fitted: PipelineModel | None = None  # the pipeline this run just fitted (else loaded from `location`)

    @cached_property
    def pipeline(self) -> PipelineModel:
        return self.fitted if self.fitted is not None else PipelineModel.load(self.location)

    @property
    def k(self) -> int:
        return self.record["k"]

    @property
    def feature_dim(self) -> int:
        return self.record["feature_dim"]

    @property
    def explained_variance(self) -> np.ndarray:
        """Share of the total variance of each fitted component (k_fitted values, descending)."""
        return self.pipeline.stages[1].explainedVariance.toArray()


# ---------------------------------------------------------------- pure functions


def select_pca_k(explained_variance: Sequence[float], target: float) -> int:
    """Smallest k whose first k explained-variance ratios add up to `target` (all of them if none does).

    The ratios are shares of the total variance, in decreasing order, as Spark's
    `PCAModel.explainedVariance` gives them. A relative tolerance of 1e-12 absorbs float rounding,
    so a target of 1.0 is reached by the components that hold all the variance.
    """
    ratios = np.asarray(explained_variance, dtype=float)
    if ratios.ndim != 1 or ratios.size == 0:
        raise ValueError("explained_variance must be a non-empty sequence of ratios")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"variance target {target} must be in (0, 1]")
    reached = np.nonzero(np.cumsum(ratios) >= target * (1.0 - 1e-12))[0]
    return int(reached[0]) + 1 if reached.size else int(ratios.size)


def k_and_variance(explained_variance: Sequence[float], fixed_k: int | None, target: float) -> tuple[int, float]:
    """(k, variance reached by the first k components): gold.k when fixed, else select_pca_k."""
    k = fixed_k if fixed_k is not None else select_pca_k(explained_variance, target)
    cumulative = np.cumsum(np.asarray(explained_variance, dtype=float))
    return k, float(cumulative[min(k, cumulative.size) - 1])


def variance_records(explained_variance: Sequence[float], model_version: str) -> list[tuple]:
    """Rows of the variance table: (component from 1, ratio, cumulative ratio, model_version)."""
    ratios = [float(r) for r in explained_variance]
    cumulative = np.cumsum(ratios)
    return [(i + 1, ratios[i], float(cumulative[i]), model_version) for i in range(len(ratios))]


def model_version_for(fitted_at: datetime, fit_rows: int, run_id: str, fingerprint: str) -> str:
    """`<UTC time>-n<rows>-<8 hex>`: sortable by time, readable, and distinct for distinct inputs.

    The hash covers the run id too: two runs fitting the same rows within the same second (two
    gold runs started at once) must not save their models into the same folder.
    """
    stamp = fitted_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-n{fit_rows}-{hashlib.sha256(f'{run_id}|{fingerprint}'.encode()).hexdigest()[:8]}"


def refit_reasons(
    fit_rows: int,
    gold_rows: int,
    refit_fraction: float,
    unseen_labels: Sequence[str],
    unseen_feature_models: Sequence[str],
    changed_settings: Sequence[str] = (),
) -> list[str]:
    """Why the current model should be refitted (empty: it still describes gold well)."""
    reasons = []
    projected = gold_rows - fit_rows
    if projected > refit_fraction * fit_rows:
        reasons.append(
            f"{projected} rows projected since the fit on {fit_rows} rows "
            f"(over gold.refit_fraction={refit_fraction:g} of the fit)"
        )
    if unseen_labels:
        shown = ", ".join(sorted(unseen_labels)[:5]) + (", ..." if len(unseen_labels) > 5 else "")
        reasons.append(f"{len(unseen_labels)} label(s) unseen at fit time ({shown})")
    if unseen_feature_models:
        reasons.append(
            f"silver has features from {len(unseen_feature_models)} feature model(s) (weights or runtime) the fit never saw"
        )
    if changed_settings:
        reasons.append(f"settings changed since the fit ({', '.join(changed_settings)})")
    return reasons


def changed_settings(record: dict, settings: GoldSettings) -> list[str]:
    """The gold.* settings that differ from those the current model was fitted with."""
    changes = []
    if record["fixed_k"] != settings.fixed_k:
        changes.append(f"gold.k {record['fixed_k']} -> {settings.fixed_k}")
    elif settings.fixed_k is None and record["variance_target"] != settings.variance_target:
        changes.append(f"gold.variance_target {record['variance_target']:g} -> {settings.variance_target:g}")
    if record["standardize"] != settings.standardize:
        changes.append(f"gold.standardize {record['standardize']} -> {settings.standardize}")
    return changes


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
        "image_id", "label", "split", "model_weights_sha256", array_to_vector("features").alias(_VECTOR_COL)
    )


def gold_rows(projected: DataFrame, model_version: str, run_id: str) -> DataFrame:
    return projected.select(
        "image_id", "label", "split",
        vector_to_array(_PCA_COL, "float64").alias("pca"),
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


# ---------------------------------------------------------------- model: fit, save, load


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


def variance_problem(feature_std: Sequence[float], explained_variance: Sequence[float]) -> str | None:
    """Why a fit cannot be used (None: it can): the features' total variance is zero or not finite,
    or Spark's explained-variance ratios are not finite numbers.

    Spark's PCA divides each eigenvalue by their sum: with zero total variance (every valid silver
    row holds the same features, e.g. one photo stored as a JPEG and as a PNG) every ratio is 0/0 =
    NaN and every score 0, which once passed the gate. The per-feature standard deviations come
    from the centering step (StandardScalerModel.std), computed by the fit anyway.
    """
    std = np.asarray(feature_std, dtype=float)
    total = float(np.sum(std * std))
    if not math.isfinite(total):
        return f"the total variance of the features is {total}"
    if total == 0.0:
        return "the features have zero total variance: every valid row holds the same feature vector"
    ratios = np.asarray(explained_variance, dtype=float)
    if not np.all(np.isfinite(ratios)):
        return f"the PCA's explained-variance ratios are not all finite numbers ({np.count_nonzero(~np.isfinite(ratios))} of {ratios.size})"
    return None


def fit_model(vectors: DataFrame, settings: GoldSettings, feature_dim: int, fit_rows: int) -> tuple[PipelineModel, int, int]:
    """Fit centering (+ scaling) and a PCA with as many components as allowed, then keep the first k.

    Returns the pipeline, k and the number of components fitted. Spark computes the covariance
    with one distributed pass; NumPy eigendecomposes it (d x d) on the driver and the result is
    checked (pipelines/pca.py: Spark's own PCA.fit returned wrong components for fits with fewer
    rows than features). Raises GoldInputError when the rows have no variance to explain
    (variance_problem), pca.DecompositionError when the decomposition fails its check; the caller
    has written nothing yet.
    """
    if settings.fixed_k is not None and settings.fixed_k > feature_dim:
        raise ConfError(f"gold.k={settings.fixed_k} exceeds the {feature_dim} features of silver: lower it or set it to null")
    k_fitted = settings.fixed_k if settings.fixed_k is not None else min(feature_dim, fit_rows, settings.max_k)
    scaler = StandardScaler(withMean=True, withStd=settings.standardize, inputCol=_VECTOR_COL, outputCol=_CENTERED_COL)
    scaler_model = scaler.fit(vectors)
    pca_model = pca.fit(
        scaler_model.transform(vectors), _CENTERED_COL, _COMPONENTS_COL, k_fitted,
        f"the {fit_rows} x {feature_dim} silver features",
    )
    explained = pca_model.explainedVariance.toArray()
    problem = variance_problem(scaler_model.std.toArray(), explained)
    if problem is not None:
        raise GoldInputError(
            f"cannot fit a PCA on the {fit_rows} valid rows of silver: {problem}. A PCA needs at least 2 distinct "
            "feature vectors: add other images to the input and rerun bronze and silver, then gold "
            "(nothing was written: no model, no gold rows)"
        )
    k = settings.fixed_k if settings.fixed_k is not None else select_pca_k(explained, settings.variance_target)
    keep_first_k = VectorSlicer(inputCol=_COMPONENTS_COL, outputCol=_PCA_COL, indices=list(range(k)))
    return PipelineModel([scaler_model, pca_model, keep_first_k]), k, k_fitted


def models_location(conf: Conf) -> str:
    return lake.lake_location(conf, conf["lake.models"], conf["gold.models_dir"])


def model_location(conf: Conf, model_version: str) -> str:
    return f"{models_location(conf)}/{model_version}"


def registry_location(conf: Conf) -> str:
    return f"{models_location(conf)}/{conf['gold.registry']}"


def current_model(spark: SparkSession, conf: Conf, gold: DataFrame) -> GoldModel | None:
    """The model of the rows in gold (None when gold is empty: the next run fits)."""
    versions = [r["model_version"] for r in gold.select("model_version").distinct().limit(2).collect()]
    if not versions:
        return None
    if len(versions) > 1:
        raise GoldStateError(
            f"gold table '{lake.table_location(conf, 'gold')}' holds rows of several model versions "
            f"({', '.join(versions)}); run gold with --refit to rewrite it with one model"
        )
    version = versions[0]
    registry = lake.read_table(spark, registry_location(conf))
    record = None if registry is None else registry.where(F.col("model_version") == version).first()
    location = model_location(conf, version)
    if record is None or not lake.exists(spark, location):
        raise GoldStateError(
            f"model {version} used by gold is missing (registry '{registry_location(conf)}', folder '{location}'); "
            f"run gold with --refit to fit a new model on all of silver"
        )
    return GoldModel(version, location, record.asDict())


def quality_facts(spark: SparkSession, conf: Conf, staged: lake.Staged) -> ModelFacts:
    """What gold's gate checks about the model of the staged batch (pipelines/stages.py: gold's
    `facts`): from the variance rows of the batch's model version and gold.* conf."""
    versions = [r[0] for r in staged.batch.select("model_version").distinct().limit(2).collect()]
    version = versions[0] if len(versions) == 1 else None
    ratios: list[float] = []
    variance = lake.read_table(spark, lake.table_location(conf, "gold_variance"))
    if version is not None and variance is not None:
        ratios = [
            r[0]
            for r in variance.where(F.col("model_version") == version)
            .orderBy("component")
            .select("explained_variance_ratio")
            .collect()
        ]
    return model_facts(version, ratios, conf["gold.k"], conf["gold.variance_target"])


def model_facts(version: str | None, ratios: Sequence[float], fixed_k: int | None, target: float) -> ModelFacts:
    """Gold's ModelFacts from a model version's explained-variance ratios: k is the rows' array
    length; the variance rows must exist and the k components' cumulative share must reach the
    target (only be a share in [0, 1] when k is fixed). Checked even when k is fixed: a NaN
    variance (a fit on features without variance) or a share above 1 is a broken model."""
    k, reached = k_and_variance(ratios, fixed_k, target) if ratios else (fixed_k, None)
    chosen = fixed_k is None
    return ModelFacts(
        version,
        k,
        (
            ModelCheck(
                "variance_components", len(ratios), 1, None,
                "The model version of the batch has its explained-variance rows (lake.tables.gold_variance).",
            ),
            ModelCheck(
                "variance_reached", reached, target if chosen else 0.0, 1.0 + VARIANCE_TOLERANCE,
                "Cumulative explained-variance ratio of the k components: a share of the total variance, "
                + ("which must reach gold.variance_target." if chosen else "in [0, 1] (k is fixed by gold.k)."),
            ),
        ),
    )


# ---------------------------------------------------------------- runs


def run(spark: SparkSession, conf: Conf, run_id: str, refit: bool = False, audit: lake.Audit | None = None) -> dict:
    """One gold run; the stats hold k, the variance reached and the target for the quality gate."""
    started = time.monotonic()
    settings = GoldSettings.from_conf(conf)
    silver_location = lake.table_location(conf, "silver")
    silver = lake.read_table(spark, silver_location)
    if silver is None:
        raise FileNotFoundError(f"silver table '{silver_location}' does not exist: run `python -m pipelines.silver` first")
    gold_location = lake.table_location(conf, "gold")
    gold = lake.read_table_or_empty(spark, gold_location, GOLD_SCHEMA)
    model = None if refit else current_model(spark, conf, gold)
    if model is None:
        mode = "refit" if refit else "fit"
        model = _fit_and_replace(spark, conf, run_id, settings, silver, audit)
    else:
        mode = "incremental"
        _project_new_rows(spark, conf, run_id, silver, gold, model, audit)
    stats = {"mode": mode, "rejected": _rejected_by_run(spark, conf, run_id)}
    if model is None:
        stats.update(rows_written=0, gold_rows=0, k=None, variance_reached=None,
                     variance_target=settings.variance_target, note="not fitted: a PCA needs at least 2 valid silver rows")
        stats["seconds"] = round(time.monotonic() - started, 1)
        return stats
    gold = spark.read.format("delta").load(gold_location)
    runs = exports.gold_runs(gold)
    stats.update(
        rows_written=runs.get((model.version, run_id), 0),
        gold_rows=sum(runs.values()),
        model_version=model.version,
        k=model.k,
        k_fitted=model.record["k_fitted"],
        feature_dim=model.feature_dim,
        variance_reached=model.record["variance_reached"],
        variance_target=model.record["variance_target"],
        fixed_k=model.record["fixed_k"],
        fit_rows=model.record["fit_rows"],
    )
    stats["refit_reasons"] = _refit_reasons(silver, gold, model, stats["gold_rows"], settings)
    stats["exports"] = exports.sync(spark, conf, run_id, gold, model.k, runs)
    reports = lake.lake_location(conf, conf["lake.reports"], STAGE, model.record["run_id"])
    stats["plots"] = gold_plots.plot_model(spark, conf, gold, model, reports)
    stats["seconds"] = round(time.monotonic() - started, 1)
    return stats


def _fit_and_replace(
    spark: SparkSession, conf: Conf, run_id: str, settings: GoldSettings, silver: DataFrame, audit: lake.Audit | None
) -> GoldModel | None:
    """Fit on every valid silver row gold has not quarantined before, save and register the model,
    then replace gold in one commit.

    Returns the new model, or None when fewer than two valid rows exist (a covariance needs two;
    the silver rows then stay pending for a later run). Rows without variance (all the same
    features) raise GoldInputError from the fit, which runs before anything is written. The new
    gold rows and the rejected rows then go through one lake.write_audit_publish that replaces gold
    (the audit, the quality gate, sees both staged) and publishes the rejections after it. The
    model, its registry row and its variance rows are written before the audit (the gate reads the
    variance of the batch's version): a failed audit or a killed run leaves them as orphans, never
    a gold row without its model; a quarantine row lost by a kill is found again by the next run.
    """
    quarantine = lake.read_table_or_empty(spark, lake.table_location(conf, "quarantine"), lake.QUARANTINE_SCHEMA)
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
    batches = {}
    model = None
    if fitted is not None:
        pipeline, k, k_fitted = fitted
        fitted_at = datetime.now(timezone.utc)
        fingerprint = f"{summary['ids_xor']}|{fit_rows}|{feature_dim}|{k}|{k_fitted}|{settings.standardize}"
        version = model_version_for(fitted_at, fit_rows, run_id, fingerprint)
        pipeline.write().overwrite().save(model_location(conf, version))
        explained = pipeline.stages[1].explainedVariance.toArray()
        record = {
            "model_version": version, "fitted_at": fitted_at, "run_id": run_id, "fit_rows": fit_rows,
            "feature_dim": feature_dim, "k": k, "k_fitted": k_fitted,
            "variance_target": None if settings.fixed_k is not None else settings.variance_target,
            "fixed_k": settings.fixed_k, "variance_reached": float(np.sum(explained[:k])),
            "standardize": settings.standardize,
            "fit_labels": sorted(summary["labels"]), "fit_feature_models": sorted(summary["feature_models"]),
        }
        lake.publish(spark, spark.createDataFrame([record], REGISTRY_SCHEMA), registry_location(conf), ("model_version",))
        lake.publish(
            spark, spark.createDataFrame(variance_records(explained, version), VARIANCE_SCHEMA),
            lake.table_location(conf, "gold_variance"), VARIANCE_KEYS,
        )
        batches["gold"] = (gold_rows(pipeline.transform(vectors), version, run_id), ("image_id",))
        model = GoldModel(version, model_location(conf, version), record, fitted=pipeline)
    if summary["rejected"]:
        batches["quarantine"] = (quarantine_rows(checked, run_id), lake.QUARANTINE_KEYS)
    if batches:  # gold is replaced, then its rejections inserted; without a model, only the rejections
        lake.write_audit_publish(
            spark, conf, STAGE, run_id, batches, audit=audit if model is not None else None, replace=model is not None
        )
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
    quarantine = lake.read_table_or_empty(spark, lake.table_location(conf, "quarantine"), lake.QUARANTINE_SCHEMA)
    new = new_silver_rows(silver, gold, quarantine)
    if new.isEmpty():
        return
    checked = check_features(new, model.feature_dim)
    problem = pca.components_problem(model.pipeline.stages[1].pc.toArray())
    if problem is not None:
        raise GoldStateError(
            f"model {model.version} used by gold ('{model.location}') cannot project new rows: {problem}. It was "
            "fitted by Spark's PCA.fit, wrong for fits with fewer rows than features (docs/gold.md); run gold with "
            "--refit to fit an exact model on all of silver"
        )
    rows = gold_rows(model.pipeline.transform(with_feature_vectors(checked)), model.version, run_id)
    lake.write_audit_publish(
        spark, conf, STAGE, run_id,
        {"gold": (rows, ("image_id",)), "quarantine": (quarantine_rows(checked, run_id), lake.QUARANTINE_KEYS)},
        audit=audit,
    )


def _rejected_by_run(spark: SparkSession, conf: Conf, run_id: str) -> int:
    """Gold quarantine rows recorded under this run id (counted in the table: exact even on a resume)."""
    quarantine = lake.read_table(spark, lake.table_location(conf, "quarantine"))
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


# ---------------------------------------------------------------- exports and plots


# ---------------------------------------------------------------- command line


def summary_line(stats: dict, run_id: str) -> str:
    if stats.get("note"):
        return f"gold run {run_id}: {stats['mode']}, {stats['note']}, rejected {stats['rejected']}, {stats['seconds']} s"
    target = f"target {stats['variance_target']:g}" if stats["variance_target"] is not None else f"fixed k {stats['fixed_k']}"
    return (
        f"gold run {run_id}: {stats['mode']}, model {stats['model_version']}, k={stats['k']} of {stats['feature_dim']} "
        f"features (variance {stats['variance_reached']:.4f}, {target}), gold rows {stats['gold_rows']} "
        f"(written {stats['rows_written']}, rejected {stats['rejected']}), {stats['seconds']} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--refit", action="store_true",
        help="fit a new model on all of silver and rewrite gold with it in one commit (docs/gold.md: when to refit)",
    )
    args = parser.parse_args(argv)
    code, stats = execute_stage(
        STAGE, args, lambda spark, conf, run_id, audit: run(spark, conf, run_id, refit=args.refit, audit=audit),
        summary_line, input_errors=(GoldStateError, GoldInputError, pca.DecompositionError, exports.ExportError), context=lambda conf: {"refit": args.refit}, force=args.refit,
    )
    if stats and stats.get("refit_reasons"):
        print(f"gold: refit recommended ({'; '.join(stats['refit_reasons'])}): run python -m pipelines.gold --refit")
    return code


if __name__ == "__main__":
    sys.exit(main())
