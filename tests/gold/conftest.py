"""Synthetic silver tables for gold's tests: features with a known low-rank structure."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from pyspark.sql import types as T

from pipelines.layout import Layout

# The silver table's schema as silver publishes it (issue 3); gold reads only some columns.
SILVER_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("features", T.ArrayType(T.FloatType(), True), True),
        T.StructField("model_name", T.StringType(), True),
        T.StructField("model_weights_sha256", T.StringType(), True),
        T.StructField("featurized_at", T.TimestampType(), True),
        T.StructField("run_id", T.StringType(), True),
    ]
)
# A comma and quotes in one label exercise the CSV export's quoting.
LABELS = ("Apple", "Banana", "Kiwi", 'Lemon, "Meyer"')
WEIGHTS = "a" * 64


def low_rank_features(rows: int, dim: int, rank: int, seed: int, noise: float = 0.02) -> np.ndarray:
    """float32 features = scores with decreasing scales on `rank` fixed directions + small noise + an offset.

    The directions and the offset depend only on (dim, rank), so batches made with other seeds
    share the same structure (as new images of the same fruits would). The offset is large, so a
    PCA that forgot to center would not match the reference.
    """
    structure = np.random.default_rng(1000 + dim * 31 + rank)
    directions = np.linalg.qr(structure.normal(size=(dim, rank)))[0].T
    offset = structure.uniform(1.0, 3.0, size=dim)
    scales = np.geomspace(8.0, 1.0, rank)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(rows, rank)) * scales
    return (scores @ directions + offset + noise * rng.normal(size=(rows, dim))).astype(np.float32)


def silver_records(features, start: int = 0, labels=LABELS, split: str = "Training", weights: str = WEIGHTS) -> list[tuple]:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [
        (
            f"img{start + i:05d}", labels[(start + i) % len(labels)], split,
            None if row is None else [None if x is None else float(x) for x in row],
            "mobilenet_v2", weights, now, "silver-test",
        )
        for i, row in enumerate(features)
    ]


def append_silver(spark, conf, records: list[tuple]) -> None:
    spark.createDataFrame(records, SILVER_SCHEMA).write.format("delta").mode("append").save(
        Layout.from_conf(conf).location("silver")
    )


@pytest.fixture
def silver_lake(spark, make_conf):
    """Conf of a fresh lake whose silver holds 48 rows of 24 low-rank (4) features."""

    def _make(*overrides: str, rows: int = 48, dim: int = 24, rank: int = 4, seed: int = 7):
        conf = make_conf(None, *overrides)
        features = low_rank_features(rows, dim, rank, seed)
        append_silver(spark, conf, silver_records(features))
        return conf, features

    return _make
