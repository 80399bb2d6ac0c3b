"""Register the lake's Delta tables as one Spark SQL database, so analysts query `fruits.gold`.

The lake stays the truth and the catalog only points at it: each table is an *external* table
(`CREATE TABLE ... USING DELTA LOCATION`), so the metastore holds a name and a location, Delta reads
the schema from the table's log (a new column appears without re-registering), and dropping a
table from the catalog never deletes data. Registration is idempotent and cheap, so every SQL entry
point (`python -m pipelines.sql`, the notebook, this module's CLI) runs it first:

- a table published in the lake but absent from the catalog is created;
- a table registered at another location (lake.root changed, another lake) is re-pointed;
- a registered table whose lake folder holds no Delta table any more is dropped, so a query on it
  fails with "table not found" instead of reading a lake that is gone;
- tables of the database that are not in `catalog.tables` (an analyst's own) are left alone.

Where the metastore lives is conf (`catalog.*`, applied by pipelines/session.catalog_settings):
a local Derby database that persists across sessions, or the AWS Glue Data Catalog on EMR.

    python -m pipelines.catalog --conf conf/local.yaml          # register, then list the tables
    spark-sql $(python -m pipelines.catalog --spark-sql-args) -e "SELECT ... FROM fruits.gold"
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from pipelines import lakefs
from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.session import build_spark_session, catalog_settings, session_settings, submit_args

STAGE = "catalog"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Settings never printed on a command line (where `ps` shows them): S3A reads the same secrets from
# the environment by itself.
_SECRET_SUFFIXES = (".access.key", ".secret.key", ".session.token")
# How a local metastore that cannot be opened shows up: Derby's own error when its text reaches
# Python, else Spark's (the Derby cause stays in the JVM stack trace). With an embedded Derby the
# usual reason is another process holding the database.
_DERBY_NOT_OPENED = (
    "XSDB6", "Another instance of Derby may have already booted",
    "Unable to instantiate org.apache.hadoop.hive.ql.metadata.SessionHiveMetaStoreClient",
)


class CatalogError(RuntimeError):
    """The catalog cannot be used; the message names the metastore or setting and what to do."""


# ---------------------------------------------------------------- pure functions


@dataclass(frozen=True)
class RegistrationPlan:
    """What to do to make the catalog match the lake, table name -> location."""

    create: dict[str, str] = field(default_factory=dict)
    repoint: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    unpublished: tuple[str, ...] = ()


def plan_registration(
    managed: Sequence[str], in_lake: Mapping[str, str], registered: Mapping[str, str | None]
) -> RegistrationPlan:
    """Compare the lake (published table -> location) with the catalog (table -> location or None).

    Only the `managed` names are considered. Locations must be comparable (both qualified URIs);
    a registered table whose location could not be read (None) is re-pointed.
    """
    create, repoint, drop, keep, unpublished = {}, {}, [], [], []
    for table in managed:
        if table in in_lake:
            if table not in registered:
                create[table] = in_lake[table]
            elif registered[table] != in_lake[table]:
                repoint[table] = in_lake[table]
            else:
                keep.append(table)
        else:
            unpublished.append(table)
            if table in registered:
                drop.append(table)
    return RegistrationPlan(create, repoint, tuple(drop), tuple(keep), tuple(unpublished))


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def sql_string(value: str) -> str:
    """A Spark SQL string literal (backslash escapes are on by default in Spark's parser)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_table_sql(database: str, table: str, location: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(database)}.{quote_identifier(table)} "
        f"USING DELTA LOCATION {sql_string(location)}"
    )


def drop_table_sql(database: str, table: str) -> str:
    return f"DROP TABLE IF EXISTS {quote_identifier(database)}.{quote_identifier(table)}"


def database_name(conf: Conf) -> str:
    """`catalog.database`, checked: Glue and Hive store names in lower case, so only those are accepted."""
    name = conf["catalog.database"]
    if not _DATABASE_NAME.match(name):
        raise ConfError(
            f"catalog.database={name!r} must be lower case letters, digits and '_', starting with a letter "
            f"or '_' (Glue Data Catalog rule), for example 'fruits'"
        )
    return name


def managed_tables(conf: Conf) -> list[str]:
    """`catalog.tables`, each checked to be a table of `lake.tables`."""
    known = set(conf["lake.tables"])
    unknown = [t for t in conf["catalog.tables"] if t not in known]
    if unknown:
        raise ConfError(
            f"catalog.tables names {', '.join(unknown)}, not in lake.tables ({', '.join(sorted(known))}); "
            f"fix the list in your conf"
        )
    return list(conf["catalog.tables"])


def spark_sql_args(conf: Conf) -> list[str]:
    """Options that give the `spark-sql` shell the same catalog, Delta and S3A settings as a session.

    The JVM options of a local run (master, jars, logging) come first, as for spark-submit;
    secrets are left out (S3A finds them in the environment).
    """
    settings = {**catalog_settings(conf), **session_settings(conf)}
    public = {key: value for key, value in settings.items() if not key.endswith(_SECRET_SUFFIXES)}
    return submit_args(conf, f"{conf['spark.app_name_prefix']}-sql", public)


# ---------------------------------------------------------------- I/O edges


@dataclass(frozen=True)
class Registration:
    database: str
    persistent: bool
    plan: RegistrationPlan

    @property
    def tables(self) -> list[str]:
        return sorted([*self.plan.create, *self.plan.repoint, *self.plan.keep])

    @property
    def changed(self) -> bool:
        return bool(self.plan.create or self.plan.repoint or self.plan.drop)


def qualified(spark: SparkSession, location: str) -> str:
    """The location as Hadoop qualifies it (file:/..., s3a://...): how the metastore records it."""
    return lakefs.qualified(spark, location)


def published_tables(spark: SparkSession, conf: Conf, tables: Sequence[str]) -> dict[str, str]:
    """Table name -> qualified location, for the tables whose lake folder holds a Delta table."""
    found = {}
    layout = Layout.from_conf(conf)
    for table in tables:
        location = layout.location(table)
        if DeltaTable.isDeltaTable(spark, location):
            found[table] = qualified(spark, location)
    return found


def registered_tables(spark: SparkSession, database: str, tables: Sequence[str]) -> dict[str, str | None]:
    """Table name -> location recorded in the catalog (None when it cannot be read), for `tables` only."""
    found: dict[str, str | None] = {}
    # SHOW TABLES reads the metastore only (Catalog.listTables also loads each Delta table, and
    # fails on one whose folder is gone: the very table to drop).
    for row in spark.sql(f"SHOW TABLES IN {quote_identifier(database)}").collect():
        if not row.isTemporary and row.tableName in tables:
            found[row.tableName] = _recorded_location(spark, database, row.tableName)
    return found


def _recorded_location(spark: SparkSession, database: str, table: str) -> str | None:
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {quote_identifier(database)}.{quote_identifier(table)}").collect()
    except AnalysisException:
        return None  # e.g. its Delta log is gone: it will be dropped or re-pointed
    return next((r.data_type for r in rows if r.col_name == "Location"), None)


def is_persistent(spark: SparkSession) -> bool:
    """False when the session was started without the metastore (Spark's in-memory catalog)."""
    return spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "hive"


def register_tables(spark: SparkSession, conf: Conf) -> Registration:
    """Make `catalog.database` list exactly the published `catalog.tables`, at their lake locations."""
    database = database_name(conf)
    tables = managed_tables(conf)
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)} COMMENT 'Fruits! lake tables'")
    except Exception as exc:  # the metastore opens lazily: its failures surface here
        raise _metastore_error(conf, exc) from exc
    plan = plan_registration(tables, published_tables(spark, conf, tables), registered_tables(spark, database, tables))
    for table in [*plan.drop, *plan.repoint]:
        spark.sql(drop_table_sql(database, table))
    for table, location in {**plan.create, **plan.repoint}.items():
        spark.sql(create_table_sql(database, table, location))
    return Registration(database, is_persistent(spark), plan)


def _metastore_error(conf: Conf, exc: Exception) -> Exception:
    text = str(exc)
    if not conf["catalog.glue"] and any(marker in text for marker in _DERBY_NOT_OPENED):
        metastore = conf.path("catalog.metastore_dir")
        return CatalogError(
            f"the local metastore {metastore} could not be opened; most often it is open in another Spark "
            f"process (Derby allows one at a time): stop that process (a notebook kernel, a spark-sql shell, "
            f"another `python -m pipelines.sql`) or give this one another folder with "
            f"--set catalog.metastore_dir=...; Derby's own message is in {metastore}/derby.log"
        )
    if conf["catalog.glue"]:
        return CatalogError(
            f"the Glue Data Catalog could not be reached ({text.splitlines()[0]}): the job's IAM role needs "
            f"glue:GetDatabase/CreateDatabase/GetTable(s)/CreateTable/DeleteTable on database "
            f"'{conf['catalog.database']}'"
        )
    return exc


def summary_line(registration: Registration) -> str:
    plan = registration.plan
    parts = [
        f"created {', '.join(plan.create) or 'none'}",
        f"re-pointed {', '.join(plan.repoint) or 'none'}",
        f"dropped {', '.join(plan.drop) or 'none'}",
        f"unchanged {', '.join(plan.keep) or 'none'}",
    ]
    if plan.unpublished:
        parts.append(f"not published yet {', '.join(plan.unpublished)}")
    where = "persistent metastore" if registration.persistent else "in-memory catalog of this session only"
    return f"catalog {registration.database} ({where}): " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser: argparse.ArgumentParser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--spark-sql-args", action="store_true",
        help="print the options for the spark-sql shell (same catalog, Delta, S3A) and exit",
    )
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    try:
        if args.spark_sql_args:
            print(shlex.join(spark_sql_args(conf)))
            return 0
        spark = build_spark_session(conf, STAGE, catalog=True)
        registration = register_tables(spark, conf)
    except (ConfError, CatalogError) as exc:
        print(f"catalog: {exc}", file=sys.stderr)
        return 2
    print(summary_line(registration))
    layout = Layout.from_conf(conf)
    for table in registration.tables:
        print(f"  {registration.database}.{table} -> {layout.location(table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
