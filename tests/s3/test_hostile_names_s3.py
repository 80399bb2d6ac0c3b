"""Hostile file names and a damaged lake on s3a:// (the local-disk twins are in tests/reliability/test_hostile_inputs.py).

Bronze's own `main`, gate included, on a real S3-compatible server: every legal name is ingested
or quarantined with a reason (S3 keys have no checksum file, so a ':' is read there), and a data
file missing from the lake ends in one line with exit 2.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest
from pyspark.sql import functions as F

from pipelines import bronze
from pipelines.layout import Layout
from tests.reliability.inputs import write_hostile_names, write_images
from rehearsal.s3_server import list_keys, upload_tree

pytestmark = [pytest.mark.s3, pytest.mark.spark]


def run_bronze_s3() -> tuple[int, str, str]:
    """bronze.main with conf/s3-local.yaml (the s3_run fixture set its environment)."""
    sets = ["spark.master=local[2]", "spark.shuffle_partitions=2"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = bronze.main(["--conf", "conf/local.yaml", "--conf", "conf/s3-local.yaml", *(a for s in sets for a in ("--set", s))])
    return code, out.getvalue(), err.getvalue()


def test_hostile_names_on_s3_are_ingested_and_a_missing_lake_file_is_one_line(spark, s3_run, tmp_path):
    source = tmp_path / "input"
    written = write_hostile_names(source)
    write_images(source, "Plain", [f"p{n}.jpg" for n in range(20)], 100)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    upload_tree(s3_run.client, source, s3_run.bucket, "input", files)

    code, out, err = run_bronze_s3()

    assert code == 0, err
    rows = spark.read.format("delta").load(Layout.from_conf(s3_run.conf).location("bronze")).select("path", "label").collect()
    assert {r["path"] for r in rows} == set(written) | {f"Training/Plain/p{n}.jpg" for n in range(20)}
    assert {"Ban#ana %20 ?", "Fig:Dried"} <= {r["label"] for r in rows}
    quarantine = Layout.from_conf(s3_run.conf).read(spark, "quarantine")
    assert quarantine is None or quarantine.where(F.col("stage") == "bronze").count() == 0

    # A data file of bronze deleted behind Delta's back: the next run says which, in one line.
    data_key = next(k for k in list_keys(s3_run.client, s3_run.bucket, "lake/bronze/") if k.endswith(".parquet"))
    s3_run.client.delete_object(Bucket=s3_run.bucket, Key=data_key)
    write_images(source, "Plain", ["later.jpg"], 200)
    upload_tree(s3_run.client, source, s3_run.bucket, "input", [source / "Training" / "Plain" / "later.jpg"])

    code, out, err = run_bronze_s3()

    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "is damaged" in err, err
    assert data_key.rsplit("/", 1)[-1] in err
