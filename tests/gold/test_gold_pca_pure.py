"""pipelines/pca.py's NumPy side (no Spark): the eigendecomposition, its check, the ratios.

The covariances are those gold meets: fewer rows than features (rank n - 1, hundreds of zero
eigenvalues, where Spark's PCA.fit went wrong) and more rows than features.
"""

import numpy as np
import pytest

from pipelines import pca
from tests.gold.conftest import low_rank_features


def sample_covariance(features: np.ndarray) -> np.ndarray:
    x = features.astype(np.float64)
    centered = x - x.mean(axis=0)
    return centered.T @ centered / (len(x) - 1)


@pytest.mark.parametrize("rows, dim", [(40, 120), (300, 120)], ids=["n<d", "n>d"])
def test_decompose_gives_orthonormal_eigenvectors_and_every_eigenvalue(rows, dim):
    cov = sample_covariance(low_rank_features(rows, dim, rank=12, seed=5, noise=0.05))
    k = min(rows, dim)
    found = pca.decompose(cov, k)

    reference = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(found.eigenvalues, np.clip(reference, 0.0, None), atol=1e-12 * reference[0])
    assert found.components.shape == (dim, k)
    np.testing.assert_allclose(found.components.T @ found.components, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(cov @ found.components, found.components * found.eigenvalues[:k], atol=1e-11 * reference[0])
    assert max(pca.decomposition_errors(cov, found.components, found.eigenvalues)) < 1e-12
    pca.check_decomposition(cov, found, "the test rows")  # passes: exact


def test_explained_variance_is_each_eigenvalue_share_of_the_trace():
    cov = sample_covariance(low_rank_features(30, 80, rank=6, seed=2))
    found = pca.decompose(cov, 10)
    assert found.explained_variance.shape == (10,)
    np.testing.assert_allclose(found.explained_variance, found.eigenvalues[:10] / np.trace(cov), rtol=1e-10)
    assert np.all(np.diff(found.explained_variance) <= 0)
    np.testing.assert_allclose(pca.decompose(cov, 80).explained_variance.sum(), 1.0, rtol=1e-12)


def test_signs_are_fixed_so_two_decompositions_of_one_matrix_agree():
    cov = sample_covariance(low_rank_features(50, 60, rank=5, seed=9))
    first = pca.decompose(cov, 5).components
    peaks = np.abs(first).argmax(axis=0)
    assert np.all(first[peaks, np.arange(5)] > 0)
    permutation = np.random.default_rng(0).permutation(60)  # same matrix, features in another order
    again = pca.decompose(cov[np.ix_(permutation, permutation)], 5).components
    np.testing.assert_allclose(again, first[permutation], atol=1e-10)


def test_no_variance_gives_nan_ratios_for_gold_to_refuse():
    found = pca.decompose(np.zeros((4, 4)), 2)
    assert np.isnan(found.explained_variance).all() and np.array_equal(found.eigenvalues, np.zeros(4))


def test_the_check_refuses_components_that_are_not_orthonormal_eigenvectors():
    cov = sample_covariance(low_rank_features(40, 100, rank=8, seed=3))
    exact = pca.decompose(cov, 20)
    # What Spark's PCA.fit returned on 600 real images: columns neither unit nor orthogonal.
    stretched = pca.Decomposition(exact.components * np.linspace(1.0, 3.0, 20), exact.eigenvalues)
    with pytest.raises(pca.DecompositionError, match=r"PCA of the test rows failed its check: max \|V'V - I\| = 8"):
        pca.check_decomposition(cov, stretched, "the test rows")
    # Orthonormal but not eigenvectors (the components of another matrix): the residual catches it.
    rotated = pca.Decomposition(np.linalg.qr(np.random.default_rng(1).normal(size=(100, 20)))[0], exact.eigenvalues)
    with pytest.raises(pca.DecompositionError, match=r"max \|C v - lambda v\| / lambda_1 = 0\.\d+.*rerun gold"):
        pca.check_decomposition(cov, rotated, "the test rows")


def test_components_problem_names_non_orthonormal_saved_components():
    cov = sample_covariance(low_rank_features(40, 100, rank=8, seed=3))
    components = pca.decompose(cov, 20).components
    assert pca.components_problem(components) is None
    components[:, 3] *= 1.5
    assert pca.components_problem(components) == (
        "its 20 components are not orthonormal (max |V'V - I| = 1.25, must be <= 1e-08)"
    )


@pytest.mark.parametrize("shape, k", [((3, 4), 1), ((4, 4), 0), ((4, 4), 5)])
def test_decompose_rejects_a_non_square_matrix_or_a_k_out_of_range(shape, k):
    with pytest.raises(ValueError, match="square matrix and 1 <= k"):
        pca.decompose(np.zeros(shape), k)
