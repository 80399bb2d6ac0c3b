"""The lake's writer lock (pipelines/lock.py) on local disk and on S3 (moto stands in for S3's
conditional PUT: If-None-Match to create, If-Match to take over or renew). No Spark."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from pipelines import lock
from pipelines.config import PROJECT_ROOT, load_conf
from pipelines.layout import Layout

BUCKET = "fruits-lock-test"


def local_conf(tmp_path, *sets):
    return load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}", *sets])


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    conf = local_conf(tmp_path)
    with lock.held(conf, "run", "run-a") as holder:
        assert holder.purpose == "run"
        with pytest.raises(lock.LakeBusy, match=r"busy: run run run-a by .* since .*; rerun when it is done"):
            with lock.held(conf, "erase", "erase-b"):
                pass
    with lock.held(conf, "erase", "erase-b"):  # released: the next one takes it
        pass


def test_a_waiting_holder_gets_the_lock_when_it_is_released(tmp_path):
    conf = local_conf(tmp_path, "lake.lock_wait_seconds=30")
    script = (
        "import sys, time; from pipelines import lock; from pipelines.config import load_conf\n"
        f"conf = load_conf(['conf/local.yaml'], ['lake.root={tmp_path / 'lake'}'])\n"
        "with lock.held(conf, 'run', 'child'):\n    print('held', flush=True); time.sleep(2)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with lock.held(conf, "maintain", "after-child"):
        assert child.poll() == 0  # it had to end (and release) first
    child.wait()


def test_a_crashed_holder_never_blocks_a_local_lake(tmp_path):
    conf = local_conf(tmp_path)
    script = (
        "import os; from pipelines import lock; from pipelines.config import load_conf\n"
        f"conf = load_conf(['conf/local.yaml'], ['lake.root={tmp_path / 'lake'}'])\n"
        "with lock.held(conf, 'run', 'crashing'):\n    os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT).returncode == 9
    with lock.held(conf, "run", "next"):
        pass


@pytest.fixture
def s3_conf(monkeypatch):
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-3"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3", region_name="eu-west-3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
        )
        yield load_conf(["conf/local.yaml"], [f"lake.root=s3a://{BUCKET}/lake", "s3.region=eu-west-3"])


def _lock_object(conf):
    body = boto3.client("s3", region_name="eu-west-3").get_object(Bucket=BUCKET, Key="lake/" + conf["lake.lock"])["Body"].read()
    return json.loads(body)


def test_s3_lock_is_exclusive_names_its_holder_and_is_deleted_at_the_end(s3_conf):
    with lock.held(s3_conf, "run", "run-a"):
        assert _lock_object(s3_conf)["run_id"] == "run-a"
        with pytest.raises(lock.LakeBusy, match="run run-a by .*when it expires"):
            with lock.held(s3_conf, "maintain", "m-1"):
                pass
    objects = boto3.client("s3", region_name="eu-west-3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert objects == []


def test_s3_lock_of_a_crashed_holder_is_taken_over_once_expired(s3_conf):
    client = boto3.client("s3", region_name="eu-west-3")
    key = "lake/" + s3_conf["lake.lock"]
    stale = {"owner": "gone@host:1", "purpose": "run", "run_id": "crashed", "token": "t",
             "acquired_at": "2026-01-01T00:00:00+00:00", "expires_at": (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()}
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(stale).encode())
    with pytest.raises(lock.LakeBusy, match="crashed"):  # not expired yet: refused
        with lock.held(s3_conf, "run", "new"):
            pass
    stale["expires_at"] = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(stale).encode())
    with lock.held(s3_conf, "run", "new"):
        assert _lock_object(s3_conf)["run_id"] == "new"


def test_s3_lock_renewal_extends_the_expiry(s3_conf):
    ttl = timedelta(seconds=3)
    s3 = lock._S3Lock(s3_conf, Layout.from_conf(s3_conf).lock, ttl)
    holder = lock._holder("run", "r", ttl, "token")
    assert s3.acquire(holder) is None
    first = _lock_object(s3_conf)["expires_at"]
    stop = lock.threading.Event()
    thread = lock.threading.Thread(target=s3.keep, args=(holder, ttl, stop))
    thread.start()
    lock.time.sleep(2.5)
    stop.set()
    thread.join()
    assert _lock_object(s3_conf)["expires_at"] > first
    s3.release()
