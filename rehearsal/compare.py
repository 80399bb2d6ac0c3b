"""Read the rehearsal's lake back over S3 and compare it with a local run on the same images.

Pure comparisons on collected rows (`feature_difference`, `score_difference`) and one reader of a
lake's tables (`lake_tables`), so the rehearsal states in figures how close the cluster's run is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines import stages
from pipelines.config import Conf
from pipelines.layout import Layout

# What the issue asks of the cluster's run against the local one.
FEATURE_TOLERANCE = 1e-5
# Scores are compared relative to their scale, after aligning each component's sign.
SCORE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LakeSnapshot:
    counts: dict[str, int | None]  # table -> rows (None: not published)
    features: dict[str, np.ndarray]  # silver: image_id -> features
    scores: dict[str, np.ndarray]  # gold: image_id -> PCA scores


def tables_of(jobs: Sequence[str], lake_tables: Sequence[str]) -> list[str]:
    """The lake tables the stages among `jobs` read or write (a stage's `reads` holds its own tables
    too), in the order of `lake_tables`. A table of a stage the deployment does not run (the
    classifier, not in aws.stages) is in neither lake, so it is not compared."""
    used = {table for job in jobs if job in stages.names() for table in stages.get(job).reads}
    return [table for table in lake_tables if table in used]


def lake_tables(spark, conf: Conf, tables: Sequence[str]) -> LakeSnapshot:
    """Row counts of `tables` (None: not published), silver's features and gold's scores by image_id."""
    counts: dict[str, int | None] = {}
    layout = Layout.from_conf(conf)
    for table in tables:
        frame = layout.read(spark, table)
        counts[table] = None if frame is None else frame.count()
    return LakeSnapshot(
        counts=counts,
        features=_vectors(spark, conf, "silver", "features"),
        scores=_vectors(spark, conf, "gold", "pca"),
    )


def _vectors(spark, conf: Conf, table: str, column: str) -> dict[str, np.ndarray]:
    frame = Layout.from_conf(conf).read(spark, table)
    if frame is None:
        return {}
    return {row["image_id"]: np.asarray(row[column], dtype=np.float64) for row in frame.select("image_id", column).collect()}


def feature_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """Largest absolute difference of one feature between the two runs (same image_ids and shapes).

    NaN when a value is not finite: a NaN never compares as small enough.
    """
    a, b = _aligned("silver", got, want)
    return _largest(np.abs(a - b))


def score_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """Largest score difference relative to the scores' scale, each component's sign aligned first.

    A PCA component is defined up to its sign: two fits of the same rows may return either.
    """
    a, b = _aligned("gold", got, want)
    signs = np.where(np.sum(a * b, axis=0) < 0, -1.0, 1.0)
    return _largest(np.abs(a * signs - b) / max(np.abs(b).max(), 1e-12))


def _aligned(table: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Both runs' vectors as matrices, rows in the same image_id order; ValueError when they cannot match."""
    _same_ids(table, got, want)
    if not want:
        raise ValueError(f"{table}: no vectors in either run")
    ids = sorted(want)
    a, b = _stacked(table, got, ids), _stacked(table, want, ids)
    if a.shape != b.shape:
        raise ValueError(f"{table}: vectors of shape {a.shape} in the rehearsal, {b.shape} in the local run")
    return a, b


def _stacked(table: str, vectors: dict[str, np.ndarray], ids: list[str]) -> np.ndarray:
    lengths = {vectors[i].shape for i in ids}
    if len(lengths) != 1:
        raise ValueError(f"{table}: vectors of different lengths {sorted(lengths)}")
    return np.stack([vectors[i] for i in ids])


def _largest(differences: np.ndarray) -> float:
    return float(differences.max()) if np.isfinite(differences).all() else float("nan")


def _same_ids(table: str, got: dict, want: dict) -> None:
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]
        raise ValueError(
            f"{table}: {len(got)} image_ids in the rehearsal, {len(want)} in the local run; "
            f"missing {missing}, unexpected {extra}"
        )
