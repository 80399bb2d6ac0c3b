"""`python -m pipelines.sql` in this process (the shared session's in-memory catalog): output and errors."""

from __future__ import annotations

import pytest

from pipelines import sql

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
