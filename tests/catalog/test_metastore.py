"""The persistent local metastore, across processes, through the two documented commands.

`python -m pipelines.sql` registers the tiny lake's tables in a Derby metastore and prints a query's
result; then the `spark-sql` shell, started with `python -m pipelines.catalog --spark-sql-args`,
reads them from that metastore in another JVM, without registering anything.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from tests.catalog.conftest import write_tiny_lake
from tests.catalog.test_queries import notebook_queries, one

# The notebook's images-per-fruit query (unqualified names: pipelines.sql sets the current database).
IMAGES_PER_FRUIT = one(notebook_queries(), "count_if")

pytestmark = pytest.mark.spark
VENV_BIN = Path(sys.executable).parent


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# make test-long: a second JVM (the spark-sql shell), ~50 s; registration and the analysts' queries stay in make test.
@pytest.mark.long
def test_tables_registered_by_the_sql_command_persist_for_the_spark_sql_shell(spark, make_conf, tmp_path):
    conf = make_conf(None)
    write_tiny_lake(spark, conf)
    options = [
        "--set", f"lake.root={conf.path('lake.root')}", "--set", f"catalog.metastore_dir={tmp_path / 'metastore'}",
        "--set", "spark.master=local[1]", "--set", "spark.driver_memory=1g", "--set", "spark.shuffle_partitions=1",
    ]

    first = run([sys.executable, "-m", "pipelines.sql", *options, IMAGES_PER_FRUIT, "SHOW TABLES", "SELECT count(*) AS n FROM gold"])

    assert first.returncode == 0, first.stderr[-3000:]
    assert "catalog fruits (persistent metastore): created bronze, silver, gold, gold_variance, quarantine, classifier, classifier_metrics" in first.stderr
    lines = first.stdout.splitlines()
    assert "|Apple Braeburn|     3|       2|   1|      3|" in lines
    assert "|          Kiwi|     1|       1|   0|      0|" in lines
    # SHOW TABLES and the unqualified `gold` resolve in the current database, catalog.database
    assert any(re.fullmatch(r"\|\s*fruits\|\s*gold_variance\|\s*false\|", line) for line in lines), lines
    assert lines[-2:] == ["|  5|", "+---+"]
    assert (tmp_path / "metastore" / "metastore_db").is_dir()
    assert (tmp_path / "metastore" / "derby.log").is_file()

    args = run([sys.executable, "-m", "pipelines.catalog", *options, "--spark-sql-args"])
    assert args.returncode == 0, args.stderr
    shell = run(
        [str(VENV_BIN / "spark-sql"), *shlex.split(args.stdout), "-e",
         "SELECT label, count(*) FROM fruits.gold GROUP BY label ORDER BY label"]
    )

    assert shell.returncode == 0, shell.stderr[-3000:]
    assert shell.stdout.splitlines() == ["Apple Braeburn\t3", "Banana\t2"]
