"""Gold's PCA model and its registry: the settings, the fit, the choice of k, where models are saved
and which one gold's rows use (pipelines/gold.py is the stage that fits, projects and publishes).

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
  fit (rows, labels, k, variance) for the refit policy. A model is usable once its registry row
  exists: the fit commits that row in the same write-audit-publish as the gold rows naming it (a
  saved folder without a registry row, left by a refused or killed fit, is never loaded).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import StandardScaler, VectorSlicer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import lakefs, pca
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.stages import ModelCheck, ModelFacts

# One row per fit: what later runs need to project with the model and to judge when to refit
# (the layout's table "pca_registry", beside the models).
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

# Column names inside the saved PipelineModel (part of the persisted model: keep them stable).
VECTOR_COL, CENTERED_COL, COMPONENTS_COL, PCA_COL = "features_vector", "features_centered", "components", "pca_vector"
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


# ---------------------------------------------------------------- fit, save, load


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
    scaler = StandardScaler(withMean=True, withStd=settings.standardize, inputCol=VECTOR_COL, outputCol=CENTERED_COL)
    scaler_model = scaler.fit(vectors)
    pca_model = pca.fit(
        scaler_model.transform(vectors), CENTERED_COL, COMPONENTS_COL, k_fitted,
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
    keep_first_k = VectorSlicer(inputCol=COMPONENTS_COL, outputCol=PCA_COL, indices=list(range(k)))
    return PipelineModel([scaler_model, pca_model, keep_first_k]), k, k_fitted


def current_model(spark: SparkSession, conf: Conf, gold: DataFrame) -> GoldModel | None:
    """The model of the rows in gold (None when gold is empty: the next run fits)."""
    versions = [r["model_version"] for r in gold.select("model_version").distinct().limit(2).collect()]
    if not versions:
        return None
    layout = Layout.from_conf(conf)
    if len(versions) > 1:
        raise GoldStateError(
            f"gold table '{layout.location('gold')}' holds rows of several model versions "
            f"({', '.join(versions)}); run gold with --refit to rewrite it with one model"
        )
    version = versions[0]
    registry = layout.read(spark, "pca_registry")
    record = None if registry is None else registry.where(F.col("model_version") == version).first()
    location = layout.pca_model(version)
    if record is None or not lakefs.exists(spark, location):
        raise GoldStateError(
            f"model {version} used by gold is missing (registry '{layout.location('pca_registry')}', folder '{location}'); "
            f"run gold with --refit to fit a new model on all of silver"
        )
    return GoldModel(version, location, record.asDict())


# ---------------------------------------------------------------- the gate's checks of a model


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
