"""The shared stage body's error classification: an unreachable store is one line, a bug is not."""

from pipelines.cli import storage_unreachable

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
