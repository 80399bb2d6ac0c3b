"""Table maintenance: bronze's retention, then OPTIMIZE and VACUUM of every lake table.

`python -m pipelines.maintain [--conf FILE] [--set KEY=VALUE] [--tables a,b] [--no-vacuum]`

Why: each increment commits a few small files to every table (one MERGE per table and run), so
after many increments a read opens hundreds of tiny files, and each MERGE, DELETE or overwrite
leaves the replaced files behind for time travel. OPTIMIZE rewrites the small files of the
current version into few large ones (one commit; readers see the same rows); VACUUM deletes the
files no version younger than `maintenance.retention_hours.<table>` needs. Delta refuses a
retention under 168 hours (a reader or a writer may still use an older version's files), and so
does this command (only an erasure vacuums at once: pipelines/erase.py).

First, with `bronze.retention_days` set, the images ingested longer ago are erased everywhere
through the same path as a request (pipelines/erase.py, reason "retention", their source files
deleted from the input so that no run ingests them again). Their bytes then leave the data files
at the VACUUM of a later maintenance, once the retention of the table's old versions has passed.

It holds the lake's writer lock (pipelines/lock.py), so it never runs while a chain writes: on AWS
the scheduled state machine runs it weekly as a job like a stage (docs/operations.md).
Exit codes: 0 done, 1 the lake is busy, 2 a setting to fix.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import erase, lakefs, lock
from pipelines.options import EXIT_INPUT, load_stage_conf, new_run_id, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.session import build_spark_session

# Delta's own floor for VACUUM retention (delta.deletedFileRetentionDuration's default: 7 days).
MIN_RETENTION_HOURS = 168


@dataclass(frozen=True)
class TableReport:
    table: str
    files_before: int  # data files of the current version (what a read opens)
    files_after: int
    stored_before: int  # data files in the folder (current and old versions)
    stored_after: int
    retention_hours: int
    seconds: float

    def line(self) -> str:
        return (
            f"maintain {self.table}: {self.files_before} -> {self.files_after} files in the current version, "
            f"{self.stored_before} -> {self.stored_after} stored (old versions kept {self.retention_hours} h), {self.seconds:.1f} s"
        )


def retention_hours(conf: Conf, table: str) -> int:
    hours = conf[f"maintenance.retention_hours.{table}"]
    if hours < MIN_RETENTION_HOURS:
        raise ConfError(
            f"maintenance.retention_hours.{table} is {hours}: below {MIN_RETENTION_HOURS} (7 days) Delta's VACUUM may delete "
            f"files a reader or a writer still uses; set at least {MIN_RETENTION_HOURS} (erasing one image vacuums at once: "
            f"python -m pipelines.erase --vacuum)"
        )
    return hours


def retention_days(conf: Conf) -> int | None:
    days = conf["bronze.retention_days"]
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ConfError(f"bronze.retention_days is {days!r}: set a whole number of days (1 or more), or null to keep the photos")
    return days


def stored_files(spark: SparkSession, location: str) -> int:
    """Parquet data files in the table's folder, whatever version they belong to (not the log)."""
    return sum(f.location.endswith(".parquet") and "/_delta_log/" not in f.location for f in lakefs.files(spark, location))


def maintain_table(spark: SparkSession, table: str, location: str, hours: int, vacuum: bool = True) -> TableReport:
    started = time.monotonic()
    delta = DeltaTable.forPath(spark, location)
    before, stored_before = delta.detail().first()["numFiles"], stored_files(spark, location)
    delta.optimize().executeCompaction()
    if vacuum:
        delta.vacuum(float(hours))
    after = DeltaTable.forPath(spark, location).detail().first()["numFiles"]
    return TableReport(table, before, after, stored_before, stored_files(spark, location), hours, time.monotonic() - started)


def expire_bronze(spark: SparkSession, conf: Conf, run_id: str) -> erase.Result | None:
    """Erase the images ingested more than bronze.retention_days ago (None when retention is off)."""
    days = retention_days(conf)
    bronze = Layout.from_conf(conf).read(spark, "bronze")
    if days is None or bronze is None:
        return None
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    expired = [r["image_id"] for r in bronze.where(F.col("ingested_at") < F.lit(cutoff)).select("image_id").collect()]
    if not expired:
        return None
    return erase.erase_images(
        spark, conf, run_id, expired, [], f"retention (bronze.retention_days={days})", "retention", delete_source=True
    )


def maintain(spark: SparkSession, conf: Conf, run_id: str, tables: list[str], vacuum: bool = True) -> tuple[erase.Result | None, list[TableReport]]:
    """Retention, then each table's OPTIMIZE and VACUUM (the caller holds the lake lock)."""
    hours = {table: retention_hours(conf, table) for table in tables}  # every setting checked before any change
    expired = expire_bronze(spark, conf, run_id)
    layout = Layout.from_conf(conf)  # maintenance.retention_hours names lake tables and the erasure audit
    reports = [
        maintain_table(spark, table, layout.location(table), hours[table], vacuum)
        for table in tables
        if DeltaTable.isDeltaTable(spark, layout.location(table))
    ]
    return expired, reports


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--tables", metavar="A,B", help="tables to maintain (default: every table of maintenance.retention_hours)")
    parser.add_argument("--no-vacuum", action="store_true", help="compact only; keep every old version's files")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    known = list(conf["maintenance.retention_hours"])
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else known
    unknown = [t for t in tables if t not in known]
    try:
        if unknown or not tables:
            raise ConfError(f"--tables {args.tables!r}: unknown table(s) {', '.join(unknown) or '(none named)'}; known: {', '.join(known)}")
        run_id = new_run_id(conf)
        for table in tables:
            retention_hours(conf, table)
        retention_days(conf)
        spark = build_spark_session(conf, "maintain")
        with lock.held(conf, "maintain", run_id):
            expired, reports = maintain(spark, conf, run_id, tables, vacuum=not args.no_vacuum)
    except ConfError as exc:
        print(f"maintain: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except lock.LakeBusy as exc:
        print(f"maintain: {exc}", file=sys.stderr)
        return 1
    if expired is not None:
        print(f"maintain: retention: {erase.summary(expired)}")
    for report in reports:
        print(report.line())
    print(f"maintain run {run_id}: {len(reports)} table(s) maintained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
