"""The S3 server stops in the middle of a run: the stage fails with a clear error instead of hanging,
and once the server is back (same port, same data) a rerun completes with the right counts.

The server is the real local S3-compatible server of rehearsal/s3_server.py (MinIO), SIGKILLed once the
run (a `python -m pipelines.bronze` process) has started writing its staging table: requests in
flight break and every later connection is refused. The rerun is bronze's main in this process.
Hadoop S3A's defaults retry a refused connection for a long time (7 S3A retries with exponential
back-off on top of 5 AWS SDK attempts per call); the run here sets the `s3.*` retry keys of conf
to the fail-fast values below (docs/reliability.md, "S3 outages").
"""

from __future__ import annotations

import os
import time

import pytest

from pipelines.layout import Layout
from tests.reliability.conftest import SUITE_SPARK_EXTRA, StageConf, build_input, run_main_in_process, write_overlay
from tests.s3.conftest import apply_s3a_settings
from tests.s3_binary import server_binary_or_skip
from rehearsal.s3_server import (
    S3_LOCAL_CONF,
    LocalS3Server,
    S3ServerError,
    load_s3_conf,
    new_bucket_name,
    region_of_overlay,
    upload_tree,
)

pytestmark = [pytest.mark.spark, pytest.mark.s3]

# The s3.* retry keys of conf/base.yaml set so that a lost server fails a call within seconds
# (Hadoop 3.4.1 defaults in brackets).
S3A_FAIL_FAST = (
    "s3.attempts_maximum=1",  # AWS SDK attempts per request [5]
    "s3.retry_limit=2",  # S3A retries of a failed request, exponential back-off from retry_interval [7]
    "s3.retry_interval=250ms",  # [500ms]
    "s3.connection_establish_timeout=5s",  # TCP connect timeout: a vanished host costs this per attempt [30s]
)
# The crashed run must end within this after the server died (a hang fails the test).
FAILURE_TIMEOUT_S = float(os.environ.get("FRUITS_RELIABILITY_S3_FAILURE_TIMEOUT_S", "300"))


class RestartableS3Server(LocalS3Server):
    """The local S3 server, able to crash (SIGKILL, data kept) and come back on the same port and data."""

    def crash(self) -> None:
        if self.process is None:
            raise S3ServerError("the S3 server is not running")
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self._spawn()
        if not self._wait_ready():
            raise S3ServerError(
                f"the S3 server did not come back on {self.endpoint} with its data in {self.base_dir}; "
                f"log:\n{self.log_file.read_text(errors='replace')[-2000:]}"
            )


@pytest.fixture
def s3_server():
    binary = server_binary_or_skip()
    with RestartableS3Server(region_of_overlay(), binary) as server:
        yield server


def bucket_key(location: str, bucket: str) -> str:
    prefix = f"s3a://{bucket}/"
    assert location.startswith(prefix), f"{location} is not in bucket {bucket}"
    return location[len(prefix) :]


def has_objects(client, bucket: str, prefix: str) -> bool:
    return client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0


@pytest.mark.slow
def test_s3_server_stopped_mid_run_fails_clearly_then_rerun_completes(
    spark, s3_server, tmp_path, stage_processes, sample, monkeypatch
):
    bucket = new_bucket_name()
    s3_server.create_bucket(bucket)
    for name, value in s3_server.location_environment(bucket).items():
        monkeypatch.setenv(name, value)
    s3_conf = load_s3_conf()
    for name, value in s3_server.credentials_environment(s3_conf).items():
        monkeypatch.setenv(name, value)
    suite_input = build_input(tmp_path / "input")
    client = s3_server.client()
    files = sorted(p for p in suite_input.root.rglob("*") if p.is_file())
    upload_tree(client, suite_input.root, bucket, bucket_key(s3_conf.path("input.path"), bucket), files)
    overlay = write_overlay(tmp_path / "suite.yaml", SUITE_SPARK_EXTRA)
    scenario = StageConf(
        s3_conf.path("lake.root"), s3_conf.path("input.path"), (*S3_LOCAL_CONF, str(overlay)), S3A_FAIL_FAST
    )
    staging = bucket_key(Layout.from_conf(scenario.conf).staging("bronze/bronze", "s3-outage"), bucket)

    run = stage_processes("bronze", scenario.args("s3-outage"), tmp_path / "logs", "bronze-s3-outage")
    run.wait_for(lambda: has_objects(client, bucket, staging), f"objects under s3://{bucket}/{staging}")
    s3_server.crash()
    crashed_at = time.monotonic()
    code = run.finish(timeout=FAILURE_TIMEOUT_S)
    seconds_to_fail = time.monotonic() - crashed_at
    print(f"\nbronze failed {seconds_to_fail:.0f} s after the S3 server died (exit {code})")

    assert code == 3, f"exit {code}, not 3 (storage unreachable: pipelines/cli.py execute_stage)\n{run.tail()}"
    failure = run.tail()
    error_lines = run.errors().splitlines()
    # The process got S3A's endpoint, path style and keys from conf and the environment alone (it
    # wrote its staging objects above); the secret never appears in what it printed.
    assert s3_server.secret_key not in run.output() + run.errors()

    s3_server.restart()
    # The rerun is the stage's own main in this process (no second JVM), on the test session given
    # the same S3A settings (build_spark_session only sets them on a session it starts).
    apply_s3a_settings(spark, scenario.conf)
    assert run_main_in_process("bronze", scenario.args("s3-rerun")) == 0, "the rerun after the outage failed"

    bronze = spark.read.format("delta").load(Layout.from_conf(scenario.conf).location("bronze"))
    rows = bronze.select("image_id", "path").collect()
    assert len(rows) == suite_input.images
    assert len({r.image_id for r in rows}) == len({r.path for r in rows}) == suite_input.images
    quarantine = spark.read.format("delta").load(Layout.from_conf(scenario.conf).location("quarantine"))
    assert quarantine.where("stage = 'bronze'").count() == suite_input.rejected

    # Checked last, so that a vague message does not hide whether the rerun completes.
    endpoint = s3_server.endpoint.removeprefix("http://")
    explained = [line for line in error_lines if line.startswith("bronze: ") and (endpoint in line or bucket in line)]
    assert explained, (
        "the crashed run should print one line of its own ('bronze: ...') naming the S3 endpoint or bucket it "
        f"lost and what to do, not only a Java stack trace; its output ends with:\n{failure[-1500:]}"
    )
