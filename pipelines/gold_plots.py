"""Gold's two plots of its PCA model: the cumulative explained variance and PC1/PC2 of a few fruits.

Drawn with matplotlib's object API (no pyplot state, nothing shown), saved locally, then copied into
the lake's reports (local folder or S3A alike) through `lakefs.put_file`; gold calls `plot_model` after
each run, and it draws only for a model that has no plots yet.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines import lakefs
from pipelines.config import Conf

if TYPE_CHECKING:
    from pipelines.gold_model import GoldModel

PLOT_FILES = {"variance": "cumulative_variance.png", "scatter": "pc1_pc2_scatter.png"}


def plot_model(spark: SparkSession, conf: Conf, gold: DataFrame, model: "GoldModel", reports: str) -> dict[str, str]:
    """The current model's PNGs in `reports` (the folder of the run that fitted it): drawn when absent
    (after a fit, or when the fitting run stopped before drawing them), else only found.

    Both describe the model (its variance curve; PC1/PC2 of a sample of its rows, which an
    increment barely moves), so a refit redraws them and an increment does not. They are drawn
    locally, then copied (local folder or S3A alike); the variance plot is copied last, so its
    presence says both are done.
    """
    files = {name: f"{reports}/{file}" for name, file in PLOT_FILES.items()}
    if lakefs.exists(spark, files["variance"]):
        return {name: path for name, path in files.items() if name == "variance" or lakefs.exists(spark, path)}
    figures = {}
    labels = scatter_labels(gold, conf["gold.plot_labels"], conf["gold.plot_max_labels"])
    if model.k >= 2 and labels:
        points = scatter_sample(gold, labels, conf["gold.plot_points_per_label"]).collect()
        figures["scatter"] = scatter_figure(points, labels, model.version)
    figures["variance"] = variance_figure(model.explained_variance, model.k, model.record["variance_target"], model.version)
    with tempfile.TemporaryDirectory(prefix="gold-plots-") as scratch:
        for name, figure in figures.items():
            local = Path(scratch) / PLOT_FILES[name]
            figure.savefig(local, dpi=110)
            lakefs.put_file(spark, local, files[name])
    return {name: files[name] for name in ("variance", "scatter") if name in figures}


def scatter_labels(gold: DataFrame, wanted: Sequence[str], max_labels: int) -> list[str]:
    """The configured labels present in gold, or else the most frequent ones (at most max_labels)."""
    present = {r["label"] for r in gold.where(F.col("label").isin(list(wanted))).select("label").distinct().collect()}
    chosen = [label for label in wanted if label in present][:max_labels]
    if chosen:
        return chosen
    frequent = gold.groupBy("label").count().orderBy(F.desc("count"), "label").limit(max_labels).collect()
    return [r["label"] for r in frequent if r["label"] is not None]


def variance_figure(explained: np.ndarray, k: int, target: float | None, model_version: str) -> Figure:
    cumulative = np.cumsum(explained)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    axes.plot(np.arange(1, len(cumulative) + 1), cumulative, color="tab:blue", label="cumulative explained variance")
    if target is not None:
        axes.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g}")
    axes.axvline(k, color="tab:green", linestyle=":", label=f"k = {k} ({cumulative[k - 1]:.3f})")
    axes.scatter([k], [cumulative[k - 1]], color="tab:green", zorder=3)
    axes.set_xscale("log" if len(cumulative) > 50 else "linear")
    axes.set(xlabel="number of components", ylabel="share of total variance", ylim=(0, 1.02),
             title=f"Gold PCA: cumulative explained variance\nmodel {model_version}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def scatter_figure(points: Sequence, labels: Sequence[str], model_version: str) -> Figure:
    figure = Figure(figsize=(7.5, 6))
    axes = figure.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for label, color in zip(labels, colors):
        xs = [p["pc1"] for p in points if p["label"] == label]
        ys = [p["pc2"] for p in points if p["label"] == label]
        axes.scatter(xs, ys, s=12, alpha=0.7, color=color, label=f"{label} ({len(xs)})")
    axes.set(xlabel="PC1", ylabel="PC2", title=f"Gold PCA: PC1 vs PC2 for {len(labels)} fruits\nmodel {model_version}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", markerscale=1.5, loc="best")
    figure.tight_layout()
    return figure


def scatter_sample(gold: DataFrame, labels: Sequence[str], per_label: int) -> DataFrame:
    """PC1 and PC2 of at most `per_label` rows per label, chosen by a hash of image_id (stable across runs)."""
    order = Window.partitionBy("label").orderBy(F.xxhash64("image_id"), "image_id")
    return (
        gold.where(F.col("label").isin(list(labels)))
        .select("label", F.col("pca")[0].alias("pc1"), F.col("pca")[1].alias("pc2"), F.row_number().over(order).alias("n"))
        .where(F.col("n") <= per_label)
        .drop("n")
    )
