"""The session builder keeps Spark's Maven jars on the JVM classpath and off every Python path."""

import sys


def _maven_jars(paths):
    return [p for p in paths if p.lower().endswith(".jar") and "userFiles-" in p]


def test_package_jars_are_off_the_python_path_of_driver_and_workers(spark):
    # Every jar spark-submit fetched for `--packages` would otherwise be read by each package
    # metadata lookup in Python (seconds per TensorFlow import in a worker).
    def worker_path(_):
        import sys as worker_sys

        yield list(worker_sys.path)

    worker_paths = spark.sparkContext.parallelize(range(2), 2).mapPartitions(worker_path).collect()
    assert worker_paths and all(_maven_jars(paths) == [] for paths in worker_paths)
    assert _maven_jars(sys.path) == []
    assert not [name for name in spark.sparkContext._python_includes if name.lower().endswith(".jar")]
    # The JVM still has them.
    assert "delta-spark" in spark.sparkContext.getConf().get("spark.jars", "")
