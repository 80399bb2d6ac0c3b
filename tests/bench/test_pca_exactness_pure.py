"""bench.pca_exactness's verdict on a fit (no Spark): exact components pass, Spark's kind of failure shows."""

import numpy as np

from bench.pca_exactness import fit_report, reference
from tests.gold.conftest import low_rank_features


def test_fit_report_tells_an_exact_fit_from_a_wrong_one():
    features = low_rank_features(30, 50, rank=5, seed=4).astype(np.float64)
    cov, eigenvalues = reference(features)
    values, vectors = np.linalg.eigh(cov)
    components = vectors[:, ::-1][:, :30]
    ratios = eigenvalues[:30] / eigenvalues.sum()
    centered = features - features.mean(axis=0)

    exact = fit_report(cov, eigenvalues, components, ratios, centered @ components, 0.95)
    assert exact["orthonormality"] < 1e-12 and exact["not_eigenvectors"] == 0 and exact["ratio_error"] < 1e-15
    assert exact["k"] == int(np.argmax(np.cumsum(ratios) >= 0.95)) + 1
    np.testing.assert_allclose(exact["column_variance"], eigenvalues[:4].round(3))

    mixed = components.copy()
    mixed[:, 2:4] = (components[:, 2:4] + components[:, 10:12]) * 2.0  # neither unit, nor eigenvectors
    wrong = fit_report(cov, eigenvalues, mixed, ratios[::-1].copy(), centered @ mixed, 0.95)
    assert wrong["orthonormality"] > 1.0 and wrong["not_eigenvectors"] == 2 and wrong["ratio_error"] > 0.01
