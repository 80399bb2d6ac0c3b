"""Gold's own `main` (as an operator runs it, quality gate included) on silver tables without variance.

Issue 21, item 3: two silver rows with identical features (one photo stored as a JPEG and as a PNG:
different bytes, same pixels) have zero total variance. Spark's PCA then gave NaN explained-variance
ratios and all-zero scores, and the gate passed the NaN variance ("13 of 13"). Gold now refuses to
fit (exit 2, nothing written), and the gate fails a NaN variance left in the lake by an earlier fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from pipelines import gold
from pipelines.layout import Layout
from tests.gold.conftest import append_silver, low_rank_features, silver_records

pytestmark = pytest.mark.spark


def options(conf, run_id: str, *sets: str) -> list[str]:
    return [a for s in (f"lake.root={conf['lake.root']}", f"run.id={run_id}", "spark.shuffle_partitions=2", *sets) for a in ("--set", s)]


def test_identical_feature_vectors_refuse_the_fit_with_exit_2_and_write_nothing(spark, make_conf, capsys):
    conf = make_conf(None)
    same = np.linspace(0.0, 6.0, 16, dtype=np.float32)
    append_silver(spark, conf, silver_records([same, same.copy()]))

    status = gold.main(options(conf, "no-variance"))

    err = capsys.readouterr().err
    assert status == 2, err[-2000:]
    line = next(line for line in err.splitlines() if line.startswith("gold: "))
    assert "cannot fit a PCA on the 2 valid rows of silver" in line and "zero total variance" in line, line
    assert "at least 2 distinct feature vectors" in line and "rerun bronze and silver" in line, line
    for table in ("gold", "gold_variance"):
        assert Layout.from_conf(conf).read(spark, table) is None, f"{table} was written"
    assert not Path(Layout.from_conf(conf).pca_models).exists(), "a model was saved"
    assert not Path(Layout.from_conf(conf).staging("gold/quarantine", "no-variance")).exists()


def test_a_nan_variance_left_by_an_earlier_fit_fails_the_gate(spark, make_conf, capsys):
    """The lake the defect left (NaN ratios, k = every component) stops the next gold run at its gate."""
    conf = make_conf(None)
    append_silver(spark, conf, silver_records(low_rank_features(24, 8, 1, seed=3)))
    settings = ("gold.max_k=1",)  # one component fitted and kept, as the two identical rows gave 2 of 2
    assert gold.main(options(conf, "fit", *settings)) == 0, capsys.readouterr().err[-2000:]
    DeltaTable.forPath(spark, Layout.from_conf(conf).location("gold_variance")).update(
        set={"explained_variance_ratio": F.lit(float("nan")), "cumulative": F.lit(float("nan"))}
    )
    append_silver(spark, conf, silver_records(low_rank_features(4, 8, 1, seed=4), start=100))
    capsys.readouterr()

    status = gold.main(options(conf, "after-nan", *settings))

    err = capsys.readouterr().err
    assert status == 1, err[-2000:]
    assert "gold quality gate failed for run after-nan" in err
    assert "gold_totals: expect_column_values_to_not_be_null on variance_reached: observed null, NaN or infinite" in err, err[-3000:]
    published = spark.read.format("delta").load(Layout.from_conf(conf).location("gold"))
    assert published.count() == 24 and published.where(F.col("run_id") == "after-nan").count() == 0
