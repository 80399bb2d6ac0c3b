"""The whole chain (bronze -> silver -> gold, as their commands run it) on s3a:// against a real
S3-compatible server, compared with the same images on local disk."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import time

import numpy as np
import pytest

from pipelines import bronze, features, gold, silver
from pipelines.config import load_conf
from pipelines.layout import Layout
from tests.conftest import MODEL_SEED, jpeg_bytes, sample_files
from tests.s3.conftest import TIMINGS
from rehearsal.s3_server import S3_LOCAL_CONF, list_keys, upload_tree

# The whole chain over S3A, then locally: minutes, so `make test-long`; `make test` keeps S3 bronze,
# gates, hostile names and the outage test, and `make rehearse` runs the chain on S3 too.
pytestmark = [pytest.mark.s3, pytest.mark.spark, pytest.mark.slow, pytest.mark.long]

CHAIN = (("bronze", bronze.main), ("silver", silver.main), ("gold", gold.main))
# The test session's Spark (local[2]) is reused by each stage's main(); these keep its conf in step.
SMALL = ["--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2", "--set", "silver.batch_size=16"]


def run_chain(argv: list[str]) -> float:
    """Each stage's command-line entry point in turn, as `make run` and EMR call them; seconds taken."""
    started = time.monotonic()
    for stage, main in CHAIN:
        assert main(argv) == 0, f"{stage} failed with {argv}"
    return time.monotonic() - started


def read(spark, conf, table):
    return spark.read.format("delta").load(Layout.from_conf(conf).location(table))


def aligned_signs(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`scores` with each component's sign turned to agree with `reference`'s: a PCA component is
    defined up to its sign, and two fits over differently partitioned rows may pick either."""
    return scores * np.where(np.sum(scores * reference, axis=0) < 0, -1.0, 1.0)


def test_chain_on_s3a_equals_local_disk(spark, s3_run, tmp_path, sample, capsys):
    if not (MODEL_SEED / features.WEIGHTS_FILE_NAME).is_file():
        pytest.skip(f"MobileNetV2 weights not found in {MODEL_SEED}")
    local_input = tmp_path / "input"
    for split, count in (("Training", 24), ("Test", 6)):
        for src in sample_files(count, split):
            target = local_input / split / src.parent.name / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    truncated = local_input / "Training" / "Odd Fruit" / "truncated.jpg"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(jpeg_bytes(size=(300, 200))[:1500])
    files = sorted(p for p in local_input.rglob("*") if p.is_file())
    upload_tree(s3_run.client, local_input, s3_run.bucket, "input", files)
    keras = ["--set", f"silver.model_seed_dir={MODEL_SEED}", "--set", f"silver.keras_home={tmp_path / 'keras'}"]
    s3_argv = [a for f in S3_LOCAL_CONF for a in ("--conf", f)] + SMALL + keras
    local_lake = tmp_path / "lake"
    local_argv = ["--conf", "conf/local.yaml", "--set", f"input.path={local_input}", "--set", f"lake.root={local_lake}"]
    local_argv += SMALL + keras
    local_conf = load_conf(["conf/local.yaml"], [f"input.path={local_input}", f"lake.root={local_lake}"])

    TIMINGS["chain bronze+silver+gold, s3a on MinIO, 30 images"] = run_chain(s3_argv)
    TIMINGS["chain bronze+silver+gold, local disk, 30 images"] = run_chain(local_argv)
    capsys.readouterr()
    run_chain(s3_argv)
    rerun = capsys.readouterr().out

    conf = s3_run.conf
    s3_bronze = {r.image_id: r for r in read(spark, conf, "bronze").collect()}
    assert len(s3_bronze) == 30
    assert {r.image_id for r in read(spark, local_conf, "bronze").collect()} == set(s3_bronze)
    assert all(r.image_id == hashlib.sha256(r.content).hexdigest() for r in s3_bronze.values())
    quarantined = read(spark, conf, "quarantine").collect()
    assert [(r.stage, r.path, r.reason.split(":")[0]) for r in quarantined] == [
        ("bronze", "Training/Odd Fruit/truncated.jpg", "malformed_jpeg")
    ]

    s3_silver = {r.image_id: np.asarray(r.features) for r in read(spark, conf, "silver").collect()}
    local_silver = {r.image_id: np.asarray(r.features) for r in read(spark, local_conf, "silver").collect()}
    assert set(s3_silver) == set(s3_bronze) == set(local_silver)
    assert max(np.abs(s3_silver[i] - local_silver[i]).max() for i in s3_silver) < 1e-5

    s3_gold = {r.image_id: r for r in read(spark, conf, "gold").collect()}
    local_gold = {r.image_id: r for r in read(spark, local_conf, "gold").collect()}
    assert set(s3_gold) == set(local_gold) == set(s3_bronze)
    ids = sorted(s3_gold)
    assert np.allclose(
        aligned_signs(np.array([s3_gold[i].pca for i in ids]), np.array([local_gold[i].pca for i in ids])),
        np.array([local_gold[i].pca for i in ids]), atol=1e-4,
    )
    assert read(spark, conf, "gold_variance").count() == read(spark, local_conf, "gold_variance").count()

    # Exports, model and reports are objects in the bucket; the CSV export (one part: one gold run,
    # under model_version=<v>/run_id=<r>/) equals the local one.
    keys = set(list_keys(s3_run.client, s3_run.bucket, "lake/"))
    csv_dir = f"lake/{conf['lake.exports']}/{conf['gold.export_csv_dir']}/"
    [csv_key] = [k for k in keys if k.startswith(csv_dir) and k.endswith(f"/{conf['gold.export_csv_name']}")]
    s3_csv = s3_run.client.get_object(Bucket=s3_run.bucket, Key=csv_key)["Body"].read().decode()
    [local_part] = (local_lake / conf["lake.exports"] / conf["gold.export_csv_dir"]).glob(
        f"model_version=*/run_id=*/{conf['gold.export_csv_name']}"
    )
    local_csv = local_part.read_text()
    s3_rows, local_rows = list(csv.reader(io.StringIO(s3_csv))), list(csv.reader(io.StringIO(local_csv)))
    assert len(s3_rows) == 31 and s3_rows[0] == local_rows[0]
    # Same rows in the same order; PCA values agree to float round-off (the two fits see differently
    # partitioned inputs, so the last digits of a float64 sum may differ).
    assert [r[:3] for r in s3_rows[1:]] == [r[:3] for r in local_rows[1:]]
    s3_matrix = np.array([[float(v) for v in r[3:]] for r in s3_rows[1:]])
    local_matrix = np.array([[float(v) for v in r[3:]] for r in local_rows[1:]])
    assert s3_matrix.shape == local_matrix.shape and np.allclose(aligned_signs(s3_matrix, local_matrix), local_matrix, atol=1e-4)
    assert any(k.startswith(f"lake/{conf['lake.exports']}/{conf['gold.export_parquet_dir']}/") for k in keys)
    assert any(k.startswith(f"lake/{conf['lake.models']}/{conf['gold.models_dir']}/") for k in keys)
    assert any(k.startswith(f"lake/{conf['lake.reports']}/") and k.endswith(".png") for k in keys)
    assert any(k.startswith(f"lake/{conf['lake.reports']}/") and k.endswith("index.html") for k in keys)
    staging = f"lake/{conf['lake.staging']}/"
    # S3A leaves empty directory markers (keys ending in '/') where it deleted a folder: no data.
    assert not [k for k in keys if k.startswith(staging) and not k.endswith("/")]

    # A rerun of the chain on s3a adds no row anywhere.
    assert "new rows 0," in rerun and "rejected 0" in rerun
    assert len(read(spark, conf, "quarantine").collect()) == 1
    assert read(spark, conf, "bronze").count() == 30 and read(spark, conf, "silver").count() == 30
    assert read(spark, conf, "gold").count() == 30
