"""Bronze over s3a:// against a real S3-compatible server, compared with the same images on local disk."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time

import pytest

from pipelines import bronze
from pipelines.layout import Layout
from tests.conftest import jpeg_bytes, sample_files
from tests.s3.conftest import TIMINGS
from rehearsal.s3_server import list_keys, upload_tree

pytestmark = [pytest.mark.s3, pytest.mark.spark]


def build_input(root, train: int, test: int):
    """Real sample images under <split>/<label with spaces>/, plus an empty, a truncated and a text file."""
    for split, count in (("Training", train), ("Test", test)):
        for src in sample_files(count, split):
            target = root / split / src.parent.name / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    odd = root / "Training" / "Odd Fruit"
    odd.mkdir(parents=True, exist_ok=True)
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "truncated.jpg").write_bytes(jpeg_bytes(size=(300, 200))[:1500])
    (odd / "grey é ü.jpeg").write_bytes(jpeg_bytes(mode="L", color=128))
    (root / "notes.txt").write_bytes(b"not an image")
    return sorted(p for p in root.rglob("*") if p.is_file())


def table_rows(spark, conf, table):
    return spark.read.format("delta").load(Layout.from_conf(conf).location(table)).collect()


def comparable(result: bronze.BronzeResult) -> bronze.BronzeResult:
    return dataclasses.replace(result, seconds=0.0)


def test_bronze_on_s3a_equals_local_disk_and_rerun_adds_nothing(spark, make_conf, s3_run, tmp_path, sample):
    local_input = tmp_path / "input"
    files = build_input(local_input, train=24, test=6)
    uploaded = upload_tree(s3_run.client, local_input, s3_run.bucket, "input", files)
    local_conf = make_conf(local_input)

    started = time.monotonic()
    local_stats = bronze.run(spark, local_conf, "local-1")
    TIMINGS["bronze, local disk, 30 images"] = time.monotonic() - started
    started = time.monotonic()
    s3_stats = bronze.run(spark, s3_run.conf, "s3-1")
    TIMINGS["bronze, s3a on MinIO, 30 images"] = time.monotonic() - started
    rerun = bronze.run(spark, s3_run.conf, "s3-2")

    assert uploaded == 34
    assert comparable(s3_stats) == comparable(local_stats)
    assert (s3_stats.files_seen, s3_stats.new_rows, s3_stats.rejected) == (34, 31, 2)
    assert s3_stats.rejected_reasons == {"empty_file": 1, "malformed_jpeg": 1}
    assert (rerun.new_rows, rerun.rejected, rerun.already_present) == (0, 0, 33)

    s3_rows = {r.path: r for r in table_rows(spark, s3_run.conf, "bronze")}
    local_rows = {r.path: r for r in table_rows(spark, local_conf, "bronze")}
    assert len(s3_rows) == 31 and set(s3_rows) == set(local_rows)
    for path, row in s3_rows.items():
        twin = local_rows[path]
        assert row.image_id == hashlib.sha256(row.content).hexdigest() == twin.image_id, path
        assert (row.label, row.split, row.size_bytes, row.source_size_bytes, row.width, row.height) == (
            twin.label, twin.split, twin.size_bytes, twin.source_size_bytes, twin.width, twin.height
        ), path
        assert row.source_size_bytes == (local_input / path).stat().st_size
    assert any(" " in row.label for row in s3_rows.values())
    assert s3_rows["Training/Odd Fruit/grey é ü.jpeg"].label == "Odd Fruit"
    s3_rejected = {r.path: r.reason for r in table_rows(spark, s3_run.conf, "quarantine")}
    assert s3_rejected == {r.path: r.reason for r in table_rows(spark, local_conf, "quarantine")}

    # The tables live in the bucket (not on local disk) and the staging tables were deleted there.
    lake_keys = list_keys(s3_run.client, s3_run.bucket, "lake/")
    assert "lake/bronze/_delta_log/00000000000000000000.json" in lake_keys
    assert any(k.startswith("lake/quarantine/_delta_log/") for k in lake_keys)
    staging = f"lake/{s3_run.conf['lake.staging']}/"
    # S3A leaves empty directory markers (keys ending in '/') where it deleted a folder: no data.
    assert not [k for k in lake_keys if k.startswith(staging) and not k.endswith("/")]
