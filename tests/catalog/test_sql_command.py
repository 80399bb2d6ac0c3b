"""`python -m pipelines.sql` in this process (the shared session's in-memory catalog): output and errors."""

from __future__ import annotations

import pytest

from pipelines import sql
from pipelines.layout import Layout

pytestmark = pytest.mark.spark


def options(conf) -> list[str]:
    return ["--set", f"lake.root={conf.path('lake.root')}", "--set", "spark.master=local[2]"]


def test_results_are_bounded_tables_and_a_rejected_statement_exits_1_after_the_earlier_ones(tiny_lake, capsys):
    status = sql.main(
        [*options(tiny_lake), "--max-rows", "2", "--truncate", "12",
         "SELECT image_id, pca FROM fruits.gold ORDER BY image_id", "SELECT nope FROM gold"]
    )

    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines() == [
        "+----------+------------+",
        "|  image_id|         pca|",
        "+----------+------------+",
        "|id-apple-1|[4.0, 5.0...|",
        "|id-apple-2|[1.0, 1.0...|",
        "+----------+------------+",
        "only showing top 2 rows",
    ]
    assert "sql: [UNRESOLVED_COLUMN" in err and "`nope`" in err
    assert "catalog fruits" in err  # the tables were registered first, and it says so


def test_a_bad_database_name_is_a_conf_error_not_a_trace(tiny_lake, capsys):
    status = sql.main([*options(tiny_lake), "--set", "catalog.database=Fruits-Lake", "SELECT 1"])
    assert status == 2
    assert "catalog.database='Fruits-Lake'" in capsys.readouterr().err


# ---------------------------------------------------------------- read-only (issue 21, item 4)

READS = [
    "SELECT 1", "select label, count(*) from gold group by label", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
    "SELECT * FROM gold WHERE image_id IN (SELECT image_id FROM silver)", "SELECT 1 UNION SELECT 2", "VALUES (1)",
    "TABLE gold", "SELECT * FROM gold VERSION AS OF 0", "SELECT 1 ;", "-- a comment\nSELECT 1",
    "SHOW TABLES IN fruits", "SHOW DATABASES", "SHOW COLUMNS IN gold", "SHOW CREATE TABLE gold", "SHOW TBLPROPERTIES gold",
    "DESCRIBE gold", "DESCRIBE TABLE EXTENDED gold", "DESCRIBE HISTORY gold", "DESCRIBE DETAIL gold", "DESCRIBE DATABASE fruits",
    "EXPLAIN SELECT * FROM gold", "explain extended SELECT 1",
]
WRITES = {
    "INSERT INTO bronze SELECT * FROM bronze LIMIT 1": "InsertIntoStatement",
    "FROM bronze INSERT INTO bronze SELECT *": "InsertIntoStatement",
    "WITH a AS (SELECT * FROM bronze LIMIT 1) INSERT INTO bronze SELECT * FROM a": "InsertIntoStatement",
    "/* tidy up */ DELETE FROM silver -- all of it": "DeleteFromTable",
    "UPDATE gold SET label = 'x'": "UpdateTable",
    "MERGE INTO gold g USING silver s ON g.image_id = s.image_id WHEN MATCHED THEN DELETE": "MergeIntoTable",
    "DROP TABLE gold": "DropTable",
    "CREATE TABLE copy AS SELECT * FROM gold": "CreateTableAsSelect",
    "CREATE TEMP VIEW v AS SELECT 1": "CreateViewCommand",
    "ALTER TABLE gold SET LOCATION '/tmp/elsewhere'": "SetTableLocation",
    "TRUNCATE TABLE gold": "TruncateTable",
    "INSERT OVERWRITE DIRECTORY '/tmp/out' SELECT 1": "InsertIntoDir",
    "RESTORE TABLE gold TO VERSION AS OF 0": "RestoreTableStatement",
    "VACUUM gold": "VacuumTableCommand",
    "CACHE TABLE gold": "CacheTable",
    "SET spark.sql.shuffle.partitions=3": "SetCommand",
    "USE default": "SetCatalogAndNamespace",
    "ADD JAR /tmp/x.jar": "AddJarsCommand",
    "EXPLAIN INSERT INTO bronze SELECT * FROM bronze": "InsertIntoStatement",
}


@pytest.mark.parametrize("statement", READS)
def test_queries_show_describe_and_explain_are_read_only(spark, statement):
    assert sql.refusal(spark, statement) is None


@pytest.mark.parametrize("statement, kind", list(WRITES.items()))
def test_statements_that_are_not_queries_are_refused_naming_what_spark_parsed(spark, statement, kind):
    assert sql.refusal(spark, statement) == f"{kind} is not a query"


def table_versions(spark, conf) -> dict[str, tuple[int, int]]:
    """Delta version and row count of every catalog table (a write would change both or one)."""
    from delta.tables import DeltaTable

    from pipelines import lake

    return {
        table: (DeltaTable.forPath(spark, Layout.from_conf(conf).location(table)).history(1).first()["version"],
                spark.read.format("delta").load(Layout.from_conf(conf).location(table)).count())
        for table in conf["catalog.tables"]
    }


def test_writes_are_refused_before_anything_runs_and_the_lake_is_unchanged(spark, tiny_lake, capsys):
    before = table_versions(spark, tiny_lake)
    statements = [
        "SELECT count(*) AS n FROM bronze",
        "INSERT INTO bronze SELECT * FROM bronze LIMIT 1",
        "DELETE FROM silver WHERE label = 'Banana'",
        "SELECT 2",
        "WITH one AS (SELECT * FROM bronze LIMIT 1) INSERT INTO bronze SELECT * FROM one",
        "DROP TABLE gold",
    ]

    status = sql.main([*options(tiny_lake), *statements])

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""  # not even the SELECTs before the first write ran
    refused = [line for line in err.splitlines() if line.startswith("sql: statement")]
    assert [line.split(" refused: ")[1].split(";")[0] for line in refused] == [
        "InsertIntoStatement is not a query", "DeleteFromTable is not a query",
        "InsertIntoStatement is not a query", "DropTable is not a query",
    ]
    assert refused[0].startswith("sql: statement 2 `INSERT INTO bronze SELECT * FROM bronze LIMIT 1` refused")
    assert all("ran nothing" in line and "rerun bronze, silver, gold" in line for line in refused)
    assert table_versions(spark, tiny_lake) == before
    assert spark.catalog.tableExists("gold", tiny_lake["catalog.database"])


def test_show_describe_and_explain_still_print_results(tiny_lake, capsys):
    status = sql.main(
        [*options(tiny_lake), "SHOW TABLES IN fruits", "DESCRIBE gold", "EXPLAIN SELECT * FROM gold", "DESCRIBE HISTORY gold"]
    )
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    assert "gold_variance" in out and "model_version" in out and "== Physical Plan ==" in out and "WRITE" in out


def test_two_statements_in_one_argument_do_not_parse_and_nothing_runs(spark, tiny_lake, capsys):
    before = table_versions(spark, tiny_lake)
    status = sql.main([*options(tiny_lake), "SELECT 1", "SELECT 1; DROP TABLE gold"])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert "PARSE_SYNTAX_ERROR" in err and "nothing was run" in err
    assert table_versions(spark, tiny_lake) == before
