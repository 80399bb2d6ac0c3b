"""GDPR right to erasure: one image deleted from every layer of the lake, the erasure audited.

`python -m pipelines.erase --image-id ID [ID ...] | --path RELATIVE_PATH [...] [--vacuum] [--delete-source]
[--requested-by NAME] [--reason TEXT]`

What is erased, under the lake's writer lock (pipelines/lock.py: no run writes meanwhile):
- the rows of the image in bronze (its photo), silver (its features), gold (its components) and
  quarantine (by id, and by path for rejects that never got an id), each in one Delta DELETE;
- the staging tables a stopped run left holding it, and the gold exports (rewritten from gold);
- with `--vacuum`, the data files the DELETEs replaced: until then they still hold the rows and
  time travel (`VERSION AS OF`) returns them; VACUUM with a zero retention removes them. Delta
  refuses a retention under 7 days by default (`retentionDurationCheck`: a reader or writer may
  still be using an older version's files); erase lifts that check for its own VACUUM only, which
  is safe for writers because it holds the lake lock, and acceptable for readers because an
  erasure must make the old versions unreadable anyway.
- with `--delete-source`, the source file in input.path (else the next bronze run ingests it
  again; erase says so when it is still there).

The audit table (lake.erasures) gets one row per image, before the first DELETE (an erasure stopped
half-way is on record; rerunning it, the image is "already erased" and the rest is done): erasure
id, image id, sha256 of its path (never the path nor the content), who asked, when, why, rows
deleted per table, and whether --vacuum was asked.
The fitted PCA model is not refitted: it holds a mean and k components over all the fit's images,
no row of this one; gold keeps projecting with it and the next refit (gold.refit_fraction, or
`python -m pipelines.gold --refit`) no longer sees the image (docs/operations.md, "Erasure").

Exit codes: 0 erased (or already erased before), 1 the lake is busy, 2 an id that is not a sha256,
or an id or path found nowhere in the lake nor in the audit (nothing is erased then: a typo must
not pass for an erasure).
"""

from __future__ import annotations

import getpass
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce

from delta.tables import DeltaTable
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import exports, lake, lakefs, lock
from pipelines.options import EXIT_INPUT, load_stage_conf, new_run_id, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.session import build_spark_session

# The tables holding image rows; bronze and quarantine also carry the source path.
IMAGE_TABLES = ("bronze", "silver", "gold", "classifier", "quarantine")
PATH_TABLES = ("bronze", "quarantine")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Delta's safety check on VACUUM retention, lifted for an erasure's own VACUUM only.
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"

AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("erasure_id", T.StringType(), False),
        T.StructField("image_id", T.StringType(), True),
        T.StructField("path_sha256", T.StringType(), True),
        T.StructField("reason", T.StringType(), False),
        T.StructField("requested_by", T.StringType(), False),
        T.StructField("erased_at", T.TimestampType(), False),
        T.StructField("rows_deleted", T.MapType(T.StringType(), T.LongType()), False),
        T.StructField("vacuum", T.BooleanType(), False),  # --vacuum asked (a rerun after a crash completes it)
    ]
)


class UnknownImage(ValueError):
    """An id or path found in no table of the lake and never erased: nothing is erased."""


@dataclass
class Result:
    erasure_id: str
    erased: list[str] = field(default_factory=list)  # image ids (or path hashes of id-less rejects)
    already: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    staging_dropped: int = 0
    sources_left: list[str] = field(default_factory=list)
    sources_deleted: int = 0
    vacuumed: list[str] = field(default_factory=list)


def path_sha256(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def check_ids(ids: Sequence[str]) -> None:
    bad = [i for i in ids if not _SHA256.fullmatch(i)]
    if bad:
        raise UnknownImage(f"not an image id (64 lower-case hex digits, the sha256 bronze gives): {', '.join(bad[:5])}")


def _matches(columns: Sequence[str], ids: Sequence[str], paths: Sequence[str]) -> Column:
    conditions = [F.col("image_id").isin(list(ids))] if ids else []
    if "path" in columns and paths:
        conditions.append(F.col("path").isin(list(paths)))
    return reduce(lambda a, b: a | b, conditions) if conditions else F.lit(False)


def _audited(spark: SparkSession, conf: Conf) -> tuple[set[str], set[str]]:
    table = Layout.from_conf(conf).read(spark, "erasures")
    if table is None:
        return set(), set()
    rows = table.select("image_id", "path_sha256").collect()
    return {r["image_id"] for r in rows if r["image_id"]}, {r["path_sha256"] for r in rows if r["path_sha256"]}


def erase_images(
    spark: SparkSession, conf: Conf, erasure_id: str, ids: Sequence[str], paths: Sequence[str],
    requested_by: str, reason: str, vacuum: bool = False, delete_source: bool = False,
) -> Result:
    """Erase the images named by id or source path (the caller holds the lake lock). UnknownImage
    when one is in no table and was never erased; then nothing is erased."""
    check_ids(ids)
    layout = Layout.from_conf(conf)
    frames = {t: layout.read(spark, t) for t in IMAGE_TABLES}
    frames = {t: f for t, f in frames.items() if f is not None}
    found = [
        f.where(_matches(f.columns, ids, paths)).select("image_id", (F.col("path") if "path" in f.columns else F.lit(None).cast("string")).alias("path"))
        for f in frames.values()
    ]
    targets = {(r["image_id"], r["path"]) for frame in found for r in frame.distinct().collect()}
    target_ids = sorted({i for i, _ in targets if i})
    target_paths = sorted({p for _, p in targets if p})
    audited_ids, audited_paths = _audited(spark, conf)
    result = Result(erasure_id)
    result.already = [i for i in ids if i not in target_ids and i in audited_ids] + [
        p for p in paths if p not in target_paths and path_sha256(p) in audited_paths
    ]
    unknown = [i for i in ids if i not in target_ids and i not in audited_ids]
    unknown += [p for p in paths if p not in target_paths and path_sha256(p) not in audited_paths]
    if unknown:
        raise UnknownImage(
            f"not in the lake {conf.path('lake.root')} (tables {', '.join(IMAGE_TABLES)}) nor erased before: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; nothing was erased: check the ids "
            f"(image_id of bronze or quarantine) or paths (relative to input.path)"
        )
    per_image: dict[str, dict[str, int]] = {}
    for table, frame in frames.items():
        condition = _matches(frame.columns, target_ids, target_paths)
        counts = frame.where(condition).groupBy("image_id", *(["path"] if "path" in frame.columns else [])).count().collect()
        for row in counts:
            key = row["image_id"] or f"path:{path_sha256(row['path'])}"
            per_image.setdefault(key, {})[table] = per_image.get(key, {}).get(table, 0) + row["count"]
        result.deleted[table] = sum(r["count"] for r in counts)
    result.erased = sorted(per_image)
    if per_image:  # audited first: an erasure stopped half-way is on record, and its rerun completes it
        _record(spark, conf, erasure_id, per_image, requested_by, reason, vacuum)
    for table, frame in frames.items():
        if result.deleted[table]:
            _delete(spark, layout.location(table), _matches(frame.columns, target_ids, target_paths))
    # An image erased before (perhaps by an erasure stopped half-way) is looked for again in staging
    # and the exports: rerunning an erasure completes it.
    every_id = sorted({*target_ids, *(i for i in ids if i in audited_ids)})
    result.staging_dropped = _drop_staging_holding(spark, conf, every_id, target_paths)
    if result.deleted.get("gold") or result.already:
        _rewrite_exports(spark, conf, erasure_id)
    if vacuum:
        result.vacuumed = vacuum_now(spark, conf, [t for t in IMAGE_TABLES if t in frames])
    result.sources_left, result.sources_deleted = _sources(spark, conf, sorted({*target_paths, *paths}), delete_source)
    return result


def _delete(spark: SparkSession, location: str, condition: Column) -> None:
    """One Delta DELETE; with deletion vectors the rows are only marked, so the files are rewritten
    (REORG ... APPLY (PURGE)) for the bytes to leave the current version's files too."""
    table = DeltaTable.forPath(spark, location)
    table.delete(condition)
    properties = table.detail().first()["properties"] or {}
    if properties.get("delta.enableDeletionVectors") == "true":
        spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)")


def vacuum_now(spark: SparkSession, conf: Conf, tables: Sequence[str]) -> list[str]:
    """VACUUM RETAIN 0 HOURS: every file no longer in the current version is deleted (module docstring)."""
    before = spark.conf.get(RETENTION_CHECK, "true")
    spark.conf.set(RETENTION_CHECK, "false")
    layout = Layout.from_conf(conf)
    try:
        for table in tables:
            DeltaTable.forPath(spark, layout.location(table)).vacuum(0.0)
    finally:
        spark.conf.set(RETENTION_CHECK, before)
    return list(tables)


def _drop_staging_holding(spark: SparkSession, conf: Conf, ids: Sequence[str], paths: Sequence[str]) -> int:
    """Drop the staging tables (<staging>/<stage>/<table>/<run_id>) a stopped run left that hold the
    image; the gold CSV scratch folders are dropped whole (a stopped export's copy of gold)."""
    dropped = 0
    for entry in lakefs.glob(spark, Layout.from_conf(conf).staging("*/*", "*")):
        stage, table, run_id = entry.location.rstrip("/").split("/")[-3:]
        frame = lake.read_table(spark, entry.location) if entry.is_dir else None
        holds = table == "csv" or (
            frame is not None and "image_id" in frame.columns and frame.where(_matches(frame.columns, ids, paths)).limit(1).count()
        )
        if holds:
            lake.drop_staging(spark, conf, f"{stage}/{table}", run_id)
            dropped += 1
    return dropped


def _rewrite_exports(spark: SparkSession, conf: Conf, erasure_id: str) -> None:
    """The exports without the erased rows: every part is dropped, then written again from gold
    (exports.sync), so no part can keep a row gold no longer holds. An erasure is rare: rewriting
    the whole matrix is simpler than finding the parts that held the image."""
    layout = Layout.from_conf(conf)
    lakefs.delete(spark, layout.exports, inside=layout.root)
    gold = layout.read(spark, "gold")
    first = gold.select(F.size("pca").alias("k")).first() if gold is not None else None
    if first is not None:
        exports.sync(spark, conf, erasure_id, gold, int(first["k"]), exports.gold_runs(gold))


def _sources(spark: SparkSession, conf: Conf, paths: Sequence[str], delete: bool) -> tuple[list[str], int]:
    """Source files still in the input: deleted with `delete`, else returned (the next run would ingest them again)."""
    left, deleted = [], 0
    root = conf.path("input.path").rstrip("/")
    for relative in paths:
        if lakefs.exists(spark, f"{root}/{relative}"):
            if delete and lakefs.delete(spark, f"{root}/{relative}", inside=root, recursive=False):
                deleted += 1
            else:
                left.append(relative)
    return left, deleted


def _record(spark, conf, erasure_id, per_image, requested_by, reason, vacuum) -> None:
    now = datetime.now(timezone.utc)
    rows = [
        (erasure_id, None if key.startswith("path:") else key, key[5:] if key.startswith("path:") else None,
         reason, requested_by, now, {t: int(n) for t, n in counts.items()}, vacuum)
        for key, counts in sorted(per_image.items())
    ]
    audit = Layout.from_conf(conf).table("erasures")
    lake.publish(spark, spark.createDataFrame(rows, audit.schema), audit.location, audit.keys)


def summary(result: Result) -> str:
    tables = ", ".join(f"{t} {n}" for t, n in result.deleted.items())
    line = f"erase {result.erasure_id}: {len(result.erased)} image(s) erased (rows deleted: {tables or 'none'})"
    if result.already:
        line += f"; already erased before: {len(result.already)}"
    if result.staging_dropped:
        line += f"; {result.staging_dropped} leftover staging folder(s) dropped"
    line += f"; vacuumed {', '.join(result.vacuumed)}" if result.vacuumed else "; not vacuumed (time travel still returns the rows: rerun with --vacuum)"
    if result.sources_deleted:
        line += f"; {result.sources_deleted} source file(s) deleted from the input"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--image-id", nargs="+", default=[], metavar="ID", help="image_id (sha256) of the images to erase")
    parser.add_argument("--path", nargs="+", default=[], metavar="PATH", help="source paths relative to input.path")
    parser.add_argument("--vacuum", action="store_true", help="also delete the replaced data files (time travel no longer returns the rows)")
    parser.add_argument("--delete-source", action="store_true", help="also delete the source files from input.path")
    parser.add_argument("--requested-by", default=getpass.getuser(), help="who asked (recorded in the audit; default: this user)")
    parser.add_argument("--reason", default="request", help="why (recorded in the audit), e.g. a ticket number")
    args = parser.parse_args(argv)
    if not args.image_id and not args.path:
        parser.error("name the images to erase: --image-id ID ... or --path PATH ...")
    conf = load_stage_conf(args)
    try:
        check_ids(args.image_id)
        erasure_id = new_run_id(conf)
    except (UnknownImage, ConfError) as exc:
        print(f"erase: {exc}", file=sys.stderr)
        return EXIT_INPUT
    spark = build_spark_session(conf, "erase")
    try:
        with lock.held(conf, "erase", erasure_id):
            result = erase_images(
                spark, conf, erasure_id, args.image_id, args.path, args.requested_by, args.reason, args.vacuum, args.delete_source
            )
    except UnknownImage as exc:
        print(f"erase: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except lock.LakeBusy as exc:
        print(f"erase: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    for relative in result.sources_left:
        print(f"erase: the source {relative} is still in {conf.path('input.path')}: the next bronze run ingests it again; "
              f"delete it there, or rerun with --delete-source", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
