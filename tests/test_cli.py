"""The shared stage body's error classification: an unreachable store is one line, a bug is not."""

import pytest

from pipelines.cli import INPUT_ERRORS, damaged_lake_file, storage_unreachable
from pipelines.options import EXIT_INPUT, new_run_id

JAVA_TRACE = """An error occurred while calling o412.save.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2856)
Caused by: org.apache.hadoop.fs.s3a.AWSClientIOException: getFileStatus on s3a://fruits/lake/bronze: Unable to execute HTTP request: Connection refused
Caused by: java.net.ConnectException: Connection refused
\tat java.base/sun.nio.ch.Net.pollConnect(Native Method)
"""


def test_unreachable_store_gives_the_innermost_cause():
    assert storage_unreachable(RuntimeError(JAVA_TRACE)) == "Caused by: java.net.ConnectException: Connection refused"


def test_unknown_host_is_unreachable():
    cause = storage_unreachable(OSError("java.net.UnknownHostException: s3.eu-west-3.amazonaws.invalid"))
    assert cause is not None and "UnknownHostException" in cause


def test_other_failures_are_not_storage_failures():
    assert storage_unreachable(ValueError("could not convert string to float: 'abc'")) is None
    assert storage_unreachable(RuntimeError("org.apache.spark.sql.AnalysisException: [DELTA_MISSING_DELTA_TABLE]")) is None


def test_a_damaged_lake_file_is_named_even_when_spark_quotes_its_path():
    text = (
        "An error occurred while calling o180.count.\n: org.apache.spark.SparkException: [FAILED_READ_FILE.FILE_NOT_EXIST] "
        "Encountered error while reading file file:///data/My%20Lake/bronze/part-0.parquet. File does not exist.\n"
        "Caused by: java.io.FileNotFoundException: File file:/data/My Lake/bronze/part-0.parquet does not exist\n"
    )
    assert damaged_lake_file(RuntimeError(text), "/data/My Lake") == (
        "/data/My Lake/bronze/part-0.parquet: FileNotFoundException: File file:/data/My Lake/bronze/part-0.parquet does not exist"
    )
    # A file beside the lake (an input folder named like it) is no lake file.
    assert damaged_lake_file(RuntimeError(text), "/data/My") is None
    assert damaged_lake_file(RuntimeError("[FAILED_READ_FILE.NO_HINT] Encountered error while reading file "
                                          "s3a://b/input/x.jpg. \n"), "s3a://b/lake") is None


def test_exit_codes_of_a_users_mistake_and_a_run_id_that_is_a_path():
    from pipelines.config import ConfError, load_conf

    assert EXIT_INPUT == 2 and {FileNotFoundError, NotADirectoryError, PermissionError, ConfError} <= set(INPUT_ERRORS)
    for bad in ("../../elsewhere", "a/b", "..", "-x", "x" * 129, "a..b"):
        with pytest.raises(ConfError, match="run.id"):
            new_run_id(load_conf(["conf/local.yaml"], [f"run.id={bad}"]))
    for good in ("scheduled__2026-12-01T00:00:00+00:00", "manual-1", "20261201T000000Z-abc123"):
        assert new_run_id(load_conf(["conf/local.yaml"], [f"run.id={good}"])) == good


def test_the_options_sit_below_quality():
    """quality.report and the bench read their options from pipelines.options: importing it must not
    bring in the gates (pipelines.cli, which runs them, sits above quality)."""
    import subprocess
    import sys

    probe = "import sys, pipelines.options; print(sorted(m for m in sys.modules if m.split('.')[0] == 'quality'))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
