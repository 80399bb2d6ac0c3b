"""The bad-input corpus (tests/reliability/corpus.py) through bronze -> silver -> gold, as an operator
runs them (each stage's own main, quality gates included): every file is processed correctly or
quarantined with a reason, every stage exits 0, and the layers reconcile.

The corpus is 40% bad on purpose, far above the 5% of bad uploads bronze's gate tolerates in
production (quality.bronze.max_quarantine_rate); the threshold is raised for this run, since what is
checked here is each file's outcome (tests/quality checks the gate itself).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from pipelines import features
from pipelines.layout import Layout
from tests.conftest import sample_files
from tests.reliability import corpus
from tests.reliability.conftest import STAGES, StageConf, run_main_in_process
from tests.reliability.corpus import FEATURIZED, IGNORED

pytestmark = [pytest.mark.spark]


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


def chain_outcomes(files, bronze, bronze_quarantine, silver, silver_quarantine) -> dict[str, str]:
    """What the lake did with each file: FEATURIZED, IGNORED, a bronze reason code, 'silver:<code>'."""
    outcomes = {}
    for file in files:
        if file.path in bronze_quarantine:
            outcomes[file.path] = reason_code(bronze_quarantine[file.path])
        elif file.path in bronze:
            image_id = bronze[file.path].image_id
            if image_id in silver:
                outcomes[file.path] = FEATURIZED
            elif image_id in silver_quarantine:
                outcomes[file.path] = "silver:" + reason_code(silver_quarantine[image_id])
            else:
                outcomes[file.path] = "in bronze, missing from silver and its quarantine"
        else:
            outcomes[file.path] = IGNORED
    return outcomes


@pytest.mark.slow
def test_bad_input_corpus_each_file_processed_or_quarantined_with_a_reason(
    spark, tmp_path, sample, weights_overrides, suite_overlay, capsys
):
    files = corpus.build_corpus(sample_files(corpus.REAL_IMAGES, "Test"))
    corpus.write_corpus(tmp_path / "input", files)
    scenario = StageConf(
        tmp_path / "lake", tmp_path / "input", ("conf/local.yaml", str(suite_overlay)),
        (*weights_overrides, "quality.bronze.max_quarantine_rate=0.5"),
    )

    exit_codes = {stage: run_main_in_process(stage, scenario.args(f"corpus-{stage}")) for stage in STAGES}
    printed = capsys.readouterr().out

    assert exit_codes == {stage: 0 for stage in STAGES}, printed[-3000:]
    conf = scenario.conf
    read = lambda table: spark.read.format("delta").load(Layout.from_conf(conf).location(table))  # noqa: E731
    bronze = {r.path: r for r in read("bronze").collect()}
    quarantine = read("quarantine")
    bronze_quarantine = {r.path: r.reason for r in quarantine.where(F.col("stage") == "bronze").collect()}
    silver_quarantine = {r.image_id: r.reason for r in quarantine.where(F.col("stage") == "silver").collect()}
    silver = {r.image_id: np.asarray(r.features, dtype=np.float32) for r in read("silver").collect()}
    gold = {r.image_id for r in read("gold").select("image_id").collect()}

    expected = {f.path: f.expected for f in files}
    assert chain_outcomes(files, bronze, bronze_quarantine, silver, silver_quarantine) == expected
    assert set(bronze) | set(bronze_quarantine) == {f.path for f in corpus.image_files(files)}, "a file was lost or invented"
    assert all(len(reason.split(":", 1)) == 2 and reason.split(":", 1)[1].strip() for reason in bronze_quarantine.values())
    assert "not images, ignored 2" in printed

    bronze_ids = {r.image_id for r in bronze.values()}
    assert len(bronze_ids) == len(bronze)
    assert bronze_ids == set(silver) | set(silver_quarantine) and not set(silver) & set(silver_quarantine)
    assert gold == set(silver), "gold must project every silver row (the corpus has no bad features)"
    for image_id, vector in silver.items():
        assert vector.shape == (features.FEATURE_SIZE,) and np.isfinite(vector).all(), image_id

    names_file = next(f for f in files if f.path.startswith(f"{corpus.SPLIT}/{corpus.NAMES_LABEL}/photo"))
    assert bronze[names_file.path].label == corpus.NAMES_LABEL

    rotated = bronze[corpus.EXIF_ROTATED]
    assert rotated.orientation == 6
    exif_features = silver[rotated.image_id]
    upright = silver[bronze[corpus.EXIF_UPRIGHT].image_id]
    as_stored = silver[bronze[corpus.EXIF_AS_STORED].image_id]
    assert np.abs(exif_features - upright).max() <= 1e-4, "silver did not turn the EXIF-rotated photo upright"
    assert np.abs(exif_features - as_stored).max() > 1e-2
