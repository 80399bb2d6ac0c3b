"""The lake lock (pipelines/lock.py) on the real local S3-compatible server (MinIO), through the same
s3.* settings S3A uses: a conditional PUT creates it once, a second holder is refused naming the
first, an expired lock is taken over, the lock is gone after its holder ends. No Spark."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pipelines import lock
from pipelines.layout import Layout

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_lake(s3_bucket):
    key = Layout.from_conf(s3_bucket.conf).lock.split(f"{s3_bucket.bucket}/", 1)[1]
    return s3_bucket.conf, s3_bucket.client, s3_bucket.bucket, key


def test_the_lock_is_exclusive_on_the_server_and_gone_after_its_holder(s3_lake):
    conf, client, bucket, key = s3_lake
    with lock.held(conf, "run", "run-a"):
        assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "run-a"
        with pytest.raises(lock.LakeBusy, match="busy: run run run-a by"):
            with lock.held(conf, "erase", "erase-b"):
                pass
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_an_expired_lock_is_taken_over_on_the_server(s3_lake):
    conf, client, bucket, key = s3_lake
    stale = {"owner": "gone@host:1", "purpose": "run", "run_id": "crashed", "token": "t", "acquired_at": "2026-01-01T00:00:00+00:00",
             "expires_at": (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()}
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(stale).encode())
    with lock.held(conf, "maintain", "m-1"):
        assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "m-1"
