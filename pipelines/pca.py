"""Gold's exact PCA fit: Spark computes the covariance, NumPy eigendecomposes it, Spark ML projects.

Why not `pyspark.ml.feature.PCA.fit`: Spark 4.0.2 takes the eigenvectors of the d x d covariance
from a full SVD (Breeze `svd`, LAPACK dgesdd) run in the pure-Java LAPACK that ships with Spark
(dev.ludovic.netlib F2jLAPACK: LAPACK 3.1 translated to Java, class files of 2007; no native
LAPACK is installed here nor on EMR). On the covariance of real MobileNetV2 features with fewer
images than features (n < d = 1280: rank n - 1, hundreds of zero eigenvalues) that SVD often
returns columns that are neither orthonormal nor eigenvectors (342 of 600 on 600 sample images),
and whether it does depends on the last bits of the covariance, which change with the order Spark
sums the rows in (docs/gold.md, "Why gold does not use Spark's PCA.fit").

What stays Spark: the covariance is Spark's own distributed pass (`RowMatrix.computeCovariance`,
the one `PCA.fit` runs), so only the d x d matrix reaches the driver, never the rows; the model is
a genuine Spark ML `PCAModel` (same class, same saved format, same `transform`), built from the
components found here. What moves to the driver: the eigendecomposition of that d x d matrix, by
NumPy's `eigh` (LAPACK dsyevd, the symmetric solver, in the OpenBLAS NumPy ships), then checked
(`check_decomposition`) before anything is saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.mllib.linalg.distributed import RowMatrix
from pyspark.mllib.util import MLUtils
from pyspark.sql import DataFrame, SparkSession

# How far from exact a decomposition may be before it is refused, relative to the largest
# eigenvalue (residual) or absolute (orthonormality). NumPy's eigh reaches ~1e-13 at d = 1280;
# the wrong SVD this module replaces was off by 1e-1 to 1 (docs/gold.md).
TOLERANCE = 1e-8


class DecompositionError(RuntimeError):
    """An eigendecomposition failed its check; the message says by how much and what to do."""


@dataclass(frozen=True)
class Decomposition:
    """The top components of a covariance and every eigenvalue, largest first.

    components: d x k, orthonormal columns, each with its largest-magnitude loading positive.
    eigenvalues: all d eigenvalues (negative rounding residues clipped to 0): their sum is the
    total variance, the denominator of the explained-variance ratios.
    """

    components: np.ndarray
    eigenvalues: np.ndarray

    @property
    def explained_variance(self) -> np.ndarray:
        """Each kept component's share of the total variance (NaN when there is no variance at all,
        as Spark's PCA gave: gold's variance_problem then refuses the fit)."""
        k = self.components.shape[1]
        total = float(np.sum(self.eigenvalues))
        if not total > 0.0:
            return np.full(k, np.nan)
        return self.eigenvalues[:k] / total


def covariance(centered: DataFrame, column: str) -> np.ndarray:
    """The sample covariance (divided by n - 1) of the ML vectors in `column`, as a d x d array.

    Spark's RowMatrix computes it in one distributed pass (each partition sums its rows' outer
    products, packed upper triangle); only the d x d result is collected.
    """
    rows = MLUtils.convertVectorColumnsFromML(centered.select(column), column)
    return RowMatrix(rows).computeCovariance().toArray()


def decompose(cov: np.ndarray, k: int) -> Decomposition:
    """The k leading eigenvectors of a symmetric matrix, largest eigenvalue first, signs fixed.

    An eigenvector's sign is arbitrary; each one is flipped so that its largest-magnitude loading
    is positive, which makes the components a function of the covariance alone (two fits of the
    same rows give the same scores, not scores of opposite signs).
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not 1 <= k <= cov.shape[0]:
        raise ValueError(f"need a square matrix and 1 <= k <= its order, got shape {cov.shape} and k={k}")
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order[:k]]
    peaks = np.abs(vectors).argmax(axis=0)
    vectors = vectors * np.where(vectors[peaks, np.arange(k)] < 0, -1.0, 1.0)
    return Decomposition(np.ascontiguousarray(vectors), values)


def decomposition_errors(cov: np.ndarray, components: np.ndarray, eigenvalues: np.ndarray) -> tuple[float, float]:
    """(max |V'V - I|, max_j |C v_j - lambda_j v_j| / lambda_1): 0 for an exact decomposition."""
    k = components.shape[1]
    orthonormality = float(np.abs(components.T @ components - np.eye(k)).max())
    scale = float(eigenvalues[0]) if eigenvalues.size and eigenvalues[0] > 0 else 1.0
    residual = np.linalg.norm(cov @ components - components * eigenvalues[:k], axis=0)
    return orthonormality, float(residual.max()) / scale


def check_decomposition(cov: np.ndarray, decomposition: Decomposition, what: str) -> None:
    """Refuse a decomposition whose components are not orthonormal eigenvectors of `cov`.

    It costs one d x d by d x k product, nothing next to the covariance pass, and it is what would
    have stopped Spark's wrong components from reaching gold.
    """
    orthonormality, residual = decomposition_errors(cov, decomposition.components, decomposition.eigenvalues)
    if not (orthonormality <= TOLERANCE and residual <= TOLERANCE):
        raise DecompositionError(
            f"the PCA of {what} failed its check: max |V'V - I| = {orthonormality:.3g}, max |C v - lambda v| / lambda_1 = "
            f"{residual:.3g} (both must be <= {TOLERANCE:g}); nothing was written: rerun gold, and if it fails again "
            "report it with the silver table's version (DESCRIBE HISTORY fruits.silver)"
        )


def pca_model(spark: SparkSession, decomposition: Decomposition, input_col: str, output_col: str) -> PCAModel:
    """A Spark ML PCAModel holding these components: the class Spark's PCA.fit returns, so it is
    saved, loaded and applied exactly as before (`transform` is `pc' x`).

    PCAModel has no public constructor in PySpark; its Scala constructor (uid, pc, explainedVariance)
    is what Spark's own fit and loader call, reached here through the session's JVM.
    """
    sc = spark.sparkContext
    d, k = decomposition.components.shape
    pc = DenseMatrix(d, k, decomposition.components.ravel(order="F").tolist())
    explained = DenseVector(decomposition.explained_variance.tolist())
    java_model = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        sc._jvm.org.apache.spark.ml.util.Identifiable.randomUID("pca"), _py2java(sc, pc), _py2java(sc, explained)
    )
    model = PCAModel(java_model)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    return model


def fit(centered: DataFrame, input_col: str, output_col: str, k: int, what: str) -> PCAModel:
    """The exact k-component PCA of the (already centered) vectors in `input_col`, checked."""
    cov = covariance(centered, input_col)
    decomposition = decompose(cov, k)
    check_decomposition(cov, decomposition, what)
    return pca_model(centered.sparkSession, decomposition, input_col, output_col)


def components_problem(components: np.ndarray) -> str | None:
    """Why saved components cannot be principal components (None: they are orthonormal).

    What a saved model alone can tell, without the covariance it came from: the wrong fits of
    Spark's PCA gave columns far from orthonormal (max |V'V - I| = 10.5 on 600 real images).
    """
    components = np.asarray(components, dtype=np.float64)
    error = float(np.abs(components.T @ components - np.eye(components.shape[1])).max())
    if error <= TOLERANCE:
        return None
    return f"its {components.shape[1]} components are not orthonormal (max |V'V - I| = {error:.3g}, must be <= {TOLERANCE:g})"
