"""`python -m bench.pca_exactness`: is a PCA of the lake's silver features the exact one?

    python -m bench.pca_exactness --set lake.root=<a lake with silver> [--fits 3] [--spark-fits 10] [--row-orders 5]

Reads the valid silver rows of `lake.root` (gold's own checks), computes the exact reference on
the driver with NumPy (covariance of the centered rows, `eigvalsh`), then fits `--fits` times
gold's PCA (`gold_model.fit_model`, what a gold run saves) and `--spark-fits` times Spark's own `StandardScaler` + `pyspark.ml.feature.PCA.fit` (what gold used before, docs/gold.md).
Each fit is checked for what a PCA promises: max |V'V - I| over the fitted components (0:
orthonormal), how many are not eigenvectors (|C v - (v'Cv) v| > 1e-6 lambda_1), the largest error
of the explained-variance ratios against the eigenvalues' shares, the k gold would choose, and
the variance of the first projected columns over the fit rows next to the eigenvalues. Every fit
of one run reads the same cached rows: only Spark's summation order changes between them.

`--row-orders N` isolates Spark's decomposition: the same rows in N seeded random orders, each in
one partition (so the covariance's summation order, hence its last bits, is fixed by the order),
through Spark's own `RowMatrix.computePrincipalComponentsAndExplainedVariance` (the covariance
pass and the Breeze/LAPACK SVD `PCA.fit` runs), each checked the same way.

Read only: nothing is written to the lake. The features are collected to the driver for the
reference (n x d doubles: 6 MB for 600 rows), so use it on test-sized lakes.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.mllib.common import _java2py
from pyspark.mllib.linalg import Vectors as MLlibVectors
from pyspark.mllib.linalg.distributed import RowMatrix

from pipelines import gold, gold_model
from pipelines.options import load_stage_conf, stage_parser
from pipelines.session import build_spark_session
from pipelines.layout import Layout

SHOWN = 4  # projected columns printed next to their eigenvalues


def reference(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(covariance of the centered rows, eigenvalues largest first, rounding residues clipped to 0)."""
    centered = features - features.mean(axis=0)
    cov = centered.T @ centered / (len(features) - 1)
    return cov, np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)


def fit_report(cov: np.ndarray, eigenvalues: np.ndarray, components: np.ndarray, ratios: np.ndarray,
               scores: np.ndarray, target: float) -> dict:
    """What one fit got right or wrong, against the reference."""
    k = components.shape[1]
    rayleigh = np.einsum("ij,ij->j", components, cov @ components)
    residual = np.linalg.norm(cov @ components - components * rayleigh, axis=0) / eigenvalues[0]
    return {
        "orthonormality": float(np.abs(components.T @ components - np.eye(k)).max()),
        "not_eigenvectors": int(np.sum(residual > 1e-6)),
        "components": k,
        "ratio_error": float(np.abs(ratios - eigenvalues[:k] / eigenvalues.sum()).max()),
        "k": gold_model.select_pca_k(ratios, target),
        "column_variance": scores[:, :SHOWN].var(axis=0, ddof=1).round(3).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=3, help="fits of gold's PCA on the same cached rows (default 3)")
    parser.add_argument("--spark-fits", type=int, default=0, help="fits of Spark's own PCA.fit, as gold did before (default 0)")
    parser.add_argument("--row-orders", type=int, default=0, help="Spark's RowMatrix PCA on the rows in N random orders (default 0)")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    spark = build_spark_session(conf, "bench-pca")
    silver = Layout.from_conf(conf).read(spark, "silver")
    if silver is None:
        print(f"bench.pca_exactness: no silver table under lake.root={conf['lake.root']}: run bronze and silver first", file=sys.stderr)
        return 2
    candidates = silver.select(*gold.SILVER_COLUMNS).dropDuplicates(["image_id"])
    dim = gold.modal_dimension(candidates)
    vectors = gold.with_feature_vectors(gold.check_features(candidates, dim)).cache()
    rows = vectors.orderBy("image_id").collect()
    ids = [r["image_id"] for r in rows]
    features = np.stack([r[gold_model.VECTOR_COL].toArray() for r in rows])
    cov, eigenvalues = reference(features)
    settings = gold_model.GoldSettings.from_conf(conf)
    target = settings.variance_target
    print(f"{len(ids)} rows x {dim} features, rank {np.linalg.matrix_rank(features - features.mean(axis=0))}; "
          f"exact: eigenvalues[:{SHOWN}] {eigenvalues[:SHOWN].round(3).tolist()}, "
          f"k for {target:g} = {gold_model.select_pca_k(eigenvalues / eigenvalues.sum(), target)}")
    for kind, fits in (("gold", args.fits), ("spark PCA.fit", args.spark_fits)):
        for fit in range(1, fits + 1):
            started = time.monotonic()
            if kind == "gold":
                model, _, _ = gold_model.fit_model(vectors, settings, dim, len(ids))
                scaler, pca_model = model.stages[0], model.stages[1]
            else:
                scaler = StandardScaler(withMean=True, withStd=settings.standardize,
                                        inputCol=gold_model.VECTOR_COL, outputCol=gold_model.CENTERED_COL).fit(vectors)
                pca_model = PCA(k=min(dim, len(ids), settings.max_k), inputCol=gold_model.CENTERED_COL,
                                outputCol=gold_model.COMPONENTS_COL).fit(scaler.transform(vectors))
            seconds = time.monotonic() - started
            projected = pca_model.transform(scaler.transform(vectors)).select("image_id", gold_model.COMPONENTS_COL).collect()
            by_id = {r["image_id"]: r[gold_model.COMPONENTS_COL].toArray() for r in projected}
            report = fit_report(cov, eigenvalues, pca_model.pc.toArray(), pca_model.explainedVariance.toArray(),
                                np.stack([by_id[i] for i in ids]), target)
            print(f"{kind} fit {fit} ({seconds:.0f} s): max |V'V - I| = {report['orthonormality']:.3g}, "
                  f"{report['not_eigenvectors']} of {report['components']} components not eigenvectors, "
                  f"max ratio error {report['ratio_error']:.3g}, k = {report['k']}, "
                  f"variance of columns 1-{SHOWN} {report['column_variance']}", flush=True)
    vectors.unpersist()
    k_fitted = min(dim, len(ids), settings.max_k)
    for order in range(1, args.row_orders + 1):
        permuted = features[np.random.default_rng(order).permutation(len(ids))]
        rows_rdd = spark.sparkContext.parallelize([MLlibVectors.dense(row) for row in permuted], 1)
        started = time.monotonic()
        result = RowMatrix(rows_rdd)._java_matrix_wrapper._java_model.computePrincipalComponentsAndExplainedVariance(k_fitted)
        components, ratios = _java2py(spark.sparkContext, result._1()).toArray(), _java2py(spark.sparkContext, result._2()).toArray()
        seconds = time.monotonic() - started
        report = fit_report(cov, eigenvalues, components, ratios, (features - features.mean(axis=0)) @ components, target)
        print(f"spark RowMatrix PCA, row order {order} ({seconds:.0f} s): max |V'V - I| = {report['orthonormality']:.3g}, "
              f"{report['not_eigenvectors']} of {report['components']} components not eigenvectors, "
              f"max ratio error {report['ratio_error']:.3g}, k = {report['k']}, "
              f"variance of columns 1-{SHOWN} {report['column_variance']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
