"""Fixtures for the S3 tests: one real MinIO server per test session, a fresh bucket per test.

The server is installed by `make setup` (scripts/install-s3-server.sh). Where it is missing the S3
tests are skipped with the command to install it, except under CI (CI=true), where a missing
server fails them: CI must prove the S3 path, not skip it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipelines.config import Conf
from pipelines.session import s3a_settings
from tests.s3_binary import server_binary_or_skip
from rehearsal.s3_server import (
    LocalS3Server,
    load_s3_conf,
    new_bucket_name,
    region_of_overlay,
)

# Seconds per (stage, storage) measured by the S3 tests, printed at the end of the run (never asserted).
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def s3_server():
    binary = server_binary_or_skip()
    with LocalS3Server(region_of_overlay(), binary) as server:
        yield server


@dataclass
class S3Run:
    """One test's bucket on the local server and the conf (local.yaml + s3-local.yaml) pointing at it."""

    server: LocalS3Server
    bucket: str
    conf: Conf

    @property
    def client(self):
        return self.server.client()


def apply_s3a_settings(spark, conf: Conf) -> None:
    """Give the running test SparkSession the S3A settings that build_spark_session derives from conf.

    The session-wide `spark` fixture was built from conf/local.yaml before the server existed, so
    the same `s3a_settings(conf)` are set on its Hadoop configuration. A new bucket per test means
    a new S3A filesystem instance, created from these settings on first use.
    """
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3a_settings(conf).items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)


def new_bucket(s3_server: LocalS3Server, monkeypatch, overrides: list[str] | None = None) -> S3Run:
    """A new bucket, and the environment conf/s3-local.yaml reads (location, credentials) set for it."""
    bucket = new_bucket_name()
    s3_server.create_bucket(bucket)
    for name, value in s3_server.location_environment(bucket).items():
        monkeypatch.setenv(name, value)
    conf = load_s3_conf(overrides or [])
    for name, value in s3_server.credentials_environment(conf).items():
        monkeypatch.setenv(name, value)
    return S3Run(s3_server, bucket, conf)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> S3Run:
    """A new bucket and its conf, without Spark (for code that reaches S3 another way)."""
    return new_bucket(s3_server, monkeypatch)


@pytest.fixture
def s3_run(s3_server, spark, monkeypatch) -> S3Run:
    """A new bucket, the environment conf/s3-local.yaml reads, and the Spark session set up for it."""
    run = new_bucket(s3_server, monkeypatch, ["spark.master=local[2]", "spark.shuffle_partitions=2"])
    apply_s3a_settings(spark, run.conf)
    return run


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("S3 vs local disk timings (seconds, same images)")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}")
