"""The gate on a lake in s3a:// (real S3-compatible server): GX works in a local folder, the reports
land in the bucket, the next gate builds on them, and the refusal reads the outcomes from S3."""

from __future__ import annotations

import pytest

from quality import gates
from tests.quality.conftest import IMAGE_IDS, bronze_rows, features, gated_publish, silver_rows
from tests.s3.conftest import s3_run, s3_server  # noqa: F401  (fixtures)
from rehearsal.s3_server import list_keys

pytestmark = [pytest.mark.s3, pytest.mark.spark]


def test_gate_reports_go_to_the_bucket_and_accumulate(spark, s3_run):  # noqa: F811
    conf = s3_run.conf
    gated_publish(spark, conf, "bronze", "s3-bronze", bronze_rows(spark, IMAGE_IDS[:3], "s3-bronze"))
    with pytest.raises(gates.GateFailed) as failure:
        bad = [(IMAGE_IDS[0], features(0, length=10)), (IMAGE_IDS[1], features(1))]
        gated_publish(spark, conf, "silver", "s3-silver", silver_rows(spark, bad, "s3-silver"))

    report = str(failure.value).split("Report: ")[1].splitlines()[0]
    assert report.startswith(f"s3a://{s3_run.bucket}/lake/_reports/quality/gx/data_docs/validations/silver_rows/s3-silver/")
    keys = list_keys(s3_run.client, s3_run.bucket, "lake/_reports/quality/")
    assert report.removeprefix(f"s3a://{s3_run.bucket}/") in keys
    assert any(k.startswith("lake/_reports/quality/gx/uncommitted/validations/bronze_rows/s3-bronze/") for k in keys)
    assert "lake/_reports/quality/gx/data_docs/static/vendor/jquery.min.js" in keys
    index = s3_run.client.get_object(Bucket=s3_run.bucket, Key="lake/_reports/quality/gx/data_docs/index.html")["Body"].read().decode()
    assert "s3-bronze" in index and "s3-silver" in index  # the second gate's index lists the first run
    assert 'src="static/vendor/jquery.min.js"' in index

    with pytest.raises(gates.UpstreamNotValidated, match="run s3-silver"):
        gates.require_upstream_passed(spark, conf, "gold")

    # A full volume (here: one run per suite) sends the next gate to the next one, in the bucket too;
    # the first volume's pages stay where their outcome rows say they are.
    rolled = conf.with_overrides(["quality.docs_volume_runs=1"])
    gated_publish(spark, rolled, "bronze", "s3-bronze-2", bronze_rows(spark, IMAGE_IDS[3:5], "s3-bronze-2"))
    keys = list_keys(s3_run.client, s3_run.bucket, "lake/_reports/quality/")
    assert any(k.startswith("lake/_reports/quality/volume-2/gx/uncommitted/validations/bronze_rows/s3-bronze-2/") for k in keys)
    assert report.removeprefix(f"s3a://{s3_run.bucket}/") in keys
    index = s3_run.client.get_object(Bucket=s3_run.bucket, Key="lake/_reports/quality/volume-2/gx/data_docs/index.html")["Body"].read().decode()
    assert "s3-bronze-2" in index and "s3-silver" not in index
    assert gates.docs_index_location(spark, conf) == f"s3a://{s3_run.bucket}/lake/_reports/quality/volume-2/gx/data_docs/index.html"
