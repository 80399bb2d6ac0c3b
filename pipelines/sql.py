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

Read-only: the analysts' command never changes the lake. One call once inserted a duplicate bronze
row and deleted silver rows (exit 0), which blocked the next silver gate and left gold with rows
silver no longer had (issue 21). Before anything runs, every statement is parsed by Spark's own
parser (the session's, Delta's extension included) and accepted only if it is a query (Spark's
`query` rule: SELECT, WITH ... SELECT, VALUES, TABLE, set operations, time travel) or a SHOW,
DESCRIBE or EXPLAIN whose statement is itself accepted. Anything else (INSERT, UPDATE, DELETE,
MERGE, CREATE, DROP, ALTER, TRUNCATE, CACHE, SET, USE, ADD JAR, VACUUM, OPTIMIZE, RESTORE, ...) is
refused with one line naming the statement and what Spark parsed it as, and the command exits 2
having run nothing. There is no write mode: the lake changes only through the stages (rerun
bronze, silver, gold; `gold --refit`), whose gates reconcile every layer.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame

from pipelines import catalog
from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import ConfError
from pipelines.session import build_spark_session

STAGE = "sql"
# Spark SQL statements that only read: the plans of SHOW ... and DESCRIBE ... (Spark's and Delta's,
# e.g. DESCRIBE HISTORY), by class name. EXPLAIN is handled apart: its statement is checked too.
_READ_ONLY_PLAN = re.compile(r"^org\.apache\.spark\.sql\.[\w.$]*\.(Show|Describe)\w*$")
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+(LOGICAL|FORMATTED|EXTENDED|CODEGEN|COST))?\s+", re.IGNORECASE)


class WriteRefused(ValueError):
    """A statement that is not read-only; the message names it, what Spark parsed it as, and why."""


def refusal(spark, statement: str) -> str | None:
    """Why `statement` may not run here (None: it only reads). Uses the session's own SQL parser, so
    comments, CTEs (`WITH ... INSERT`) and Delta's commands are seen as Spark will run them.

    Raises Spark's ParseException for a statement that does not parse (two statements in one
    argument included: the parser wants one).
    """
    parser = spark._jsparkSession.sessionState().sqlParser()
    plan = parser.parsePlan(statement)
    kind = plan.getClass().getName()
    if _READ_ONLY_PLAN.match(kind):
        return None
    explained = _EXPLAIN.match(statement)
    if explained and kind.endswith(".ExplainCommand"):
        return refusal(spark, statement[explained.end():])
    try:
        parser.parseQuery(statement.rstrip().rstrip(";"))
        return None
    except PySparkException:  # Spark's ParseException: not a query
        pass
    if kind.endswith(".UnresolvedWith"):  # WITH ... INSERT: name what follows the CTEs
        kind = plan.child().getClass().getName()
    return f"{kind.rsplit('.', 1)[-1]} is not a query"


def check_read_only(spark, statements: list[str]) -> None:
    """Raise WriteRefused (one line per refused statement) unless every statement only reads."""
    refused = []
    for number, statement in enumerate(statements, start=1):
        reason = refusal(spark, statement)
        if reason is not None:
            refused.append(f"statement {number} `{_shorten(statement)}` refused: {reason}")
    if refused:
        raise WriteRefused(
            "\n".join(
                f"sql: {line}; this command only reads the lake (queries, SHOW, DESCRIBE, EXPLAIN) and ran nothing: "
                "tables change only through the stages (rerun bronze, silver, gold)"
                for line in refused
            )
        )


def _shorten(statement: str, width: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


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
    try:
        check_read_only(spark, args.statements)
    except WriteRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    except PySparkException as exc:
        print(f"sql: {exc}; nothing was run", file=sys.stderr)
        return 1
    for statement in args.statements:
        try:
            print(render(spark.sql(statement), max_rows, truncate))
        except PySparkException as exc:
            print(f"sql: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
