"""Run Spark SQL on the lake's tables and print each result as a table.

    python -m pipelines.sql "SELECT label, count(*) AS images FROM fruits.bronze GROUP BY label"
    python -m pipelines.sql --conf conf/local.yaml --set lake.root=/tmp/lake "SHOW TABLES IN fruits"

It takes the stages' `--conf`/`--set` options, starts a session with the persistent catalog,
registers the lake's tables first (pipelines/catalog.py: idempotent, and silent when nothing
changed), makes `catalog.database` the current database (so `gold` means `fruits.gold`), then runs
each statement in order. Output is bounded by conf (`catalog.show_rows` rows, cells cut to
`catalog.show_truncate` characters), or by --max-rows/--truncate: a PCA array has dozens of values.
A statement Spark rejects ends the command with Spark's message and exit status 1, after the
results of the statements before it.
"""

from __future__ import annotations

import contextlib
import io
import sys

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame

from pipelines import catalog
from pipelines.cli import load_stage_conf, stage_parser
from pipelines.config import ConfError
from pipelines.session import build_spark_session

STAGE = "sql"


def render(frame: DataFrame, max_rows: int, truncate: int) -> str:
    """The frame as Spark's text table (`DataFrame.show`): only max_rows + 1 rows reach the driver."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        frame.show(max_rows, truncate=truncate)
    return out.getvalue().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("statements", nargs="+", metavar="SQL", help="statement(s) to run, in order")
    parser.add_argument("--max-rows", type=int, default=None, help="rows printed per result (default: catalog.show_rows)")
    parser.add_argument(
        "--truncate", type=int, default=None, help="characters per cell, 0 for no cut (default: catalog.show_truncate)"
    )
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    max_rows = conf["catalog.show_rows"] if args.max_rows is None else args.max_rows
    truncate = conf["catalog.show_truncate"] if args.truncate is None else args.truncate
    try:
        spark = build_spark_session(conf, STAGE, catalog=True)
        registration = catalog.register_tables(spark, conf)
    except (ConfError, catalog.CatalogError) as exc:
        print(f"sql: {exc}", file=sys.stderr)
        return 2
    if registration.changed:
        print(catalog.summary_line(registration), file=sys.stderr)
    spark.catalog.setCurrentDatabase(registration.database)
    for statement in args.statements:
        try:
            print(render(spark.sql(statement), max_rows, truncate))
        except PySparkException as exc:
            print(f"sql: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
