"""Bronze: ingest raw images into the lake, incrementally, with GDPR metadata removed.

read conf -> list the input folder (names, sizes, times only) -> keep files not seen before ->
read their bytes -> scrub and check each image (pure) -> split accepted/rejected -> audit -> publish.

Decisions (see docs/bronze.md):
- `image_id` is the sha256 of the stored (scrubbed) bytes. When the same bytes arrive under two
  paths, the first path in sort order (or the one already in bronze) owns the image; every other
  path gets a quarantine row with reason `duplicate`, so it is accounted for and never silently lost.
- Rejected files (empty, truncated, not an image, bomb, duplicate, no label folder) go to the
  shared quarantine table with `stage = 'bronze'` and a reason; a file is "seen" once it is in
  bronze or in quarantine, so reruns add nothing and the counts always reconcile.
- No partitioning: one row per image of ~5 KB, tens of MB in all; label partitions would create
  hundreds of tiny files. Delta's file statistics already prune on `label`/`split` for analysts.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import lake, lakefs
from pipelines.cli import execute_stage
from pipelines.options import stage_parser
from pipelines.config import Conf, is_remote
from pipelines.images import inspect_image, sha256_hex
from pipelines.layout import Layout

STAGE = "bronze"
# Quarantine reasons that record a change to a file bronze already ingested (not a rejection).
CHANGED, TOUCHED = "changed_since_ingest", "touched_since_ingest"
# A quarantine row is keyed by the file's size and time too: a file rejected, changed or touched
# again gets a new row, so it is recorded once per version and is no candidate again until it changes.
QUARANTINE_KEYS = (*lake.QUARANTINE_KEYS, "source_size_bytes", "source_modified_at")

BRONZE_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("content", T.BinaryType(), True),
        T.StructField("size_bytes", T.LongType(), True),
        T.StructField("source_size_bytes", T.LongType(), True),
        T.StructField("source_modified_at", T.TimestampType(), True),
        T.StructField("format", T.StringType(), True),
        T.StructField("width", T.IntegerType(), True),
        T.StructField("height", T.IntegerType(), True),
        T.StructField("orientation", T.IntegerType(), True),
        T.StructField("ingested_at", T.TimestampType(), True),
        T.StructField("run_id", T.StringType(), True),
    ]
)


_INSPECTED_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("image_id", T.StringType()),
        T.StructField("content", T.BinaryType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("format", T.StringType()),
        T.StructField("width", T.IntegerType()),
        T.StructField("height", T.IntegerType()),
        T.StructField("orientation", T.IntegerType()),
        T.StructField("reason", T.StringType()),
    ]
)
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")


@dataclass(frozen=True)
class BronzeResult:
    """What one bronze run did: its summary line and the bench read it (a typed result, not a dict
    of string keys, so a renamed or missing count fails where it is read, not in a printed line)."""

    files_seen: int  # files under input.path, images or not
    images_seen: int  # of those, files with an image extension (input.extensions)
    new_files: int  # images not yet in bronze nor in bronze's quarantine with their size and time
    ignored_not_image: int  # files without an image extension: neither read nor recorded
    already_present: int  # images already recorded (in bronze or quarantined) with their size and time
    new_rows: int  # rows this run inserted into bronze
    rejected: int  # rows this run inserted into the quarantine (rejections and recorded changes)
    rejected_reasons: dict[str, int]  # this run's quarantine rows per reason code
    rename_to_ingest: list[str]  # first RENAMES_SHOWN valid-looking files a new name would ingest ("path (code)")
    seconds: float  # the run's wall-clock seconds


# ---------------------------------------------------------------- pure functions


def with_relative_paths(listing: DataFrame, root_uri: str, extensions: Sequence[str], splits: Sequence[str]) -> DataFrame:
    """Add `rel_path`, `label`, `split`, `is_image` to a binaryFile listing under `root_uri`.

    Label = name of the folder holding the file (spaces kept), null for a file directly under the
    root or under a split folder; split = the first folder of the path that is in `splits`;
    is_image = the file's extension is one of `extensions` (any case). Spark SQL expressions, not
    Python UDFs: listing a lake's worth of files starts no Python worker. The extension is matched
    by a case-insensitive pattern, not with `lower()`: the first `lower()` a Spark 4 JVM evaluates
    builds ICU's title case of every Unicode code point (CollationAwareUTF8String's static table):
    1 to 3 s of a bronze run's cold start on 2 cores (docs/benchmarks.md, "3 December, night").
    """
    prefix = root_uri.rstrip("/") + "/"
    rel = F.when(F.col("path").startswith(prefix), F.expr(f"substring(path, {len(prefix) + 1})"))
    parts = F.split(F.col("rel_path"), "/")
    folders = F.slice(parts, 1, F.size(parts) - 1)
    holder = F.try_element_at(folders, F.lit(-1))
    split_names = F.array(*[F.lit(s) for s in splits])
    name = F.element_at(parts, -1)
    # \z, not $: Java's $ also matches before a final line break, and "a.jpg\n" is no image file.
    image_name = "(?i)[.](" + "|".join(re.escape(e) for e in extensions) + ")\\z"
    return (
        listing.withColumn("rel_path", rel)
        .withColumn("label", F.when(~F.array_contains(split_names, holder), holder))
        .withColumn("split", F.try_element_at(F.filter(folders, lambda f: F.array_contains(split_names, f)), F.lit(1)))
        .withColumn("is_image", name.rlike(image_name) if extensions else F.lit(False))
    )


def mark_seen(files: DataFrame, bronze: DataFrame, quarantine: DataFrame) -> DataFrame:
    """Add `seen`: the file is recorded in bronze, or in bronze's quarantine, with its size and time.

    A file rewritten in place (new size or modification time) is unseen again, so its new bytes
    are either ingested or quarantined with a reason, never ignored.
    """
    keys = ["rel_path", "length", "modificationTime"]
    recorded = [
        table.select(
            F.col("path").alias("rel_path"), F.col("source_size_bytes").alias("length"),
            F.col("source_modified_at").alias("modificationTime"),
        )
        for table in (bronze, quarantine.where(F.col("stage") == STAGE))
    ]
    seen = recorded[0].unionByName(recorded[1]).distinct().withColumn("seen", F.lit(True))
    return files.join(seen, keys, "left").withColumn("seen", F.coalesce(F.col("seen"), F.lit(False)))


def unreadable_name(file_name: Column, local_input: bool) -> Column:
    """The quarantine reason of a file whose name Spark cannot open on this file system, else null.

    Hadoop's local file system opens a file together with its checksum file `.<name>.crc`, built
    as a relative URI from the name: a ':' in it reads as a URI scheme and the read fails for the
    whole batch. Such a file is quarantined unread, so the rest of the batch is ingested. S3 keys
    have no checksum file and are read whatever their name.
    """
    if not local_input:
        return F.lit(None).cast("string")
    return F.when(
        file_name.contains(":"),
        F.lit(
            "unreadable_name: Hadoop's local file system cannot open a file whose name contains ':'; "
            "rename the file without ':' to ingest it"
        ),
    )


def inspect_batches(batches: Iterator[pd.DataFrame], max_pixels: int, max_bytes: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: scrub and check every file; never raises for a bad image.

    A file with a `name_reason` was not read (see unreadable_name): it is rejected with that reason.
    """
    for batch in batches:
        rows = []
        for path, name_reason, content in zip(batch["rel_path"], batch["name_reason"], batch["content"]):
            if name_reason is not None:
                rows.append({**_rejected(path, b"", name_reason), "image_id": None, "size_bytes": None})
                continue
            data = bytes(content) if content is not None else b""
            if len(data) > max_bytes:
                rows.append(_rejected(path, data, f"too_large: {len(data)} bytes, over bronze.max_file_bytes={max_bytes}"))
                continue
            result = inspect_image(data, max_pixels)
            if result.reason is not None:
                rows.append(_rejected(path, data, result.reason))
                continue
            rows.append(
                {
                    "path": path,
                    "image_id": sha256_hex(result.content),
                    "content": result.content,
                    "size_bytes": len(result.content),
                    "format": result.image_format,
                    "width": result.width,
                    "height": result.height,
                    "orientation": result.orientation,
                    "reason": None,
                }
            )
        yield pd.DataFrame(rows, columns=_INSPECTED_SCHEMA.fieldNames()).astype(
            {"size_bytes": "Int64", "width": "Int32", "height": "Int32", "orientation": "Int32"}
        )


def _rejected(path: str, data: bytes, reason: str) -> dict:
    return {
        "path": path, "image_id": sha256_hex(data), "content": None, "size_bytes": len(data),
        "format": None, "width": None, "height": None, "orientation": None, "reason": reason,
    }


def assign_outcomes(inspected: DataFrame, known_images: DataFrame) -> DataFrame:
    """Give every inspected file its final `reason` (null = accepted into bronze).

    A path bronze already holds was rewritten, touched or replaced in place: `touched_since_ingest`
    when its image content and EXIF orientation are the ingested ones, else `changed_since_ingest`
    (bronze keeps the first version; the quarantine row records the change, so the file is no
    candidate again until it changes once more); a new version that is no valid image keeps its
    inspection reason. Adds `no_label` for files outside a label folder and `duplicate` for bytes
    already owned by another path: by a bronze row (`known_images`: image_id, path, orientation) or
    by a smaller path in the batch.
    """
    owner = Window.partitionBy("image_id").orderBy("path")
    known = known_images.select("image_id", F.col("path").alias("known_path"))
    # A path bronze holds is judged by its own version (below), never as a duplicate owner: its new
    # bytes copied under a new name are then that name's, and ingested there.
    candidates = inspected.where(F.col("reason").isNull() & F.col("label").isNotNull()).join(
        known_images.select("path"), "path", "left_anti"
    )
    ranked = (
        candidates.join(known, "image_id", "left")
        .withColumn("batch_owner", F.first("path").over(owner))
        .withColumn(
            "dup_reason",
            F.when(
                F.col("known_path").isNotNull(),
                F.concat(F.lit("duplicate: same bytes as bronze path '"), F.col("known_path"), F.lit("'")),
            ).when(
                F.col("path") != F.col("batch_owner"),
                F.concat(F.lit("duplicate: same bytes as '"), F.col("batch_owner"), F.lit("' in this batch")),
            ),
        )
        .select("path", "dup_reason")
    )
    changed = known_images.select(
        "path", F.col("image_id").alias("ingested_id"), F.col("orientation").alias("ingested_orientation")
    )
    changed_reason = F.when(
        (F.col("ingested_id") == F.col("image_id")) & F.col("ingested_orientation").eqNullSafe(F.col("orientation")),
        F.concat(
            F.lit(f"{TOUCHED}: same image content as bronze image_id "), F.col("ingested_id"),
            F.lit(" (only the file's time, size or metadata changed); nothing to do"),
        ),
    ).when(
        F.col("ingested_id").isNotNull() & F.col("reason").isNull(),
        F.concat(
            F.lit(f"{CHANGED}: bronze already holds this path as image_id "), F.col("ingested_id"),
            F.lit("; bronze keeps the first version: give the new version a new file name to ingest it"),
        )
    )
    no_label = F.when(
        F.col("reason").isNull() & F.col("label").isNull(),
        F.lit("no_label: the file is not inside a label folder (expected <input>/[<split>/]<label>/<file>)"),
    )
    return (
        inspected.join(ranked, "path", "left")
        .join(changed, "path", "left")
        .withColumn("reason", F.coalesce(changed_reason, F.col("reason"), no_label, F.col("dup_reason")))
        .drop("dup_reason", "ingested_id", "ingested_orientation")
    )


def bronze_rows(outcomes: DataFrame, run_id: str) -> DataFrame:
    return outcomes.where(F.col("reason").isNull()).select(
        "image_id", "path", "label", "split", "content", "size_bytes", "source_size_bytes",
        "source_modified_at", "format", "width", "height", "orientation",
        F.current_timestamp().alias("ingested_at"), F.lit(run_id).alias("run_id"),
    )


def quarantine_rows(outcomes: DataFrame, run_id: str) -> DataFrame:
    return outcomes.where(F.col("reason").isNotNull()).select(
        "image_id", "path", F.lit(STAGE).alias("stage"), "reason", "source_size_bytes", "source_modified_at",
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("recorded_at"),
    )


# ---------------------------------------------------------------- I/O edges


def list_input(spark: SparkSession, root: str) -> tuple[DataFrame, str]:
    """Every file under `root` (path, length, modificationTime; the bytes are not read), cached,
    and the root URI.

    Spark's binaryFile scan leaves out empty files, so they are found in the scan's file index
    (`inputFiles`) and added back: an empty upload must end in quarantine, not vanish. The listing
    is cached and counted first: when it holds as many files as the index (no empty file, the usual
    case), no second scan and join look for them. Spark's file listing skips names starting with
    '_' or '.' as hidden files (documented limit).
    """
    if not lakefs.exists(spark, root):
        raise FileNotFoundError(
            f"input folder '{root}' does not exist: set input.path in your conf overlay, --set input.path=..., "
            f"or FRUITS_INPUT (README, section 'Data', says how to download Fruits-360)"
        )
    if lakefs.is_file(spark, root):
        raise NotADirectoryError(
            f"input.path '{root}' is a file, not a folder: set input.path to the folder holding "
            f"<split>/<label>/<image> (README, section 'Data')"
        )
    if not is_remote(root):
        check_no_folder_loop(Path(urlparse(root).path if root.startswith("file:") else root))
    root_uri = lakefs.qualified(spark, root)
    scan = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(root)
    listing = scan.select("path", "length", "modificationTime").cache()
    input_files = scan.inputFiles()
    if len(input_files) == listing.count():
        return listing, root_uri
    indexed = spark.createDataFrame([(_hadoop_path_string(u),) for u in input_files], "path string")
    missing = [r.path for r in indexed.join(listing, "path", "left_anti").collect()]
    if missing:
        statuses = [lakefs.status(spark, p) for p in missing]
        empties = spark.createDataFrame(
            [(p, s.size, datetime.fromtimestamp(s.modified_ms / 1000, timezone.utc)) for p, s in zip(missing, statuses)],
            listing.schema,
        )
        with_empties = listing.unionByName(empties).cache()
        listing.unpersist()
        listing = with_empties
    return listing, root_uri


def check_no_folder_loop(root: Path) -> None:
    """Raise NotADirectoryError when a folder link under a local `root` points back at one of its own parents.

    Folder links are followed on purpose (lakefs.local_walk); a link to a parent would make Spark's
    listing recurse until the OS refuses the path, ingesting the same images under ever longer paths.
    """
    try:
        for _ in lakefs.local_walk(root):
            pass
    except lakefs.FolderLoop as loop:
        raise NotADirectoryError(
            f"input.path '{root}': the folder link '{loop.link}' points back at one of its own parent "
            f"folders ({loop.target}), so the input has no end: remove or fix that link"
        ) from None


def _hadoop_path_string(uri: str) -> str:
    """`inputFiles()` gives encoded URIs (file:///a%20b); the scan's `path` column gives file:/a b."""
    return re.sub(r"^file:///", "file:/", unquote(uri))


def inspection_tasks(new_files: int, files_per_partition: int, cores: int) -> int:
    """Partitions of the new files to inspect: `files_per_partition` files each, at least one per
    core to keep every core busy, never more than one per file."""
    return max(1, min(new_files, max(cores, -(-new_files // files_per_partition))))


def read_contents(spark: SparkSession, root_uri: str, rel_paths: list[str], files_per_partition: int) -> DataFrame:
    """Bytes of the given files only (glob characters in names escaped), with `rel_path`."""
    if not rel_paths:
        return spark.createDataFrame([], "rel_path string, content binary")
    prefix = root_uri.rstrip("/") + "/"
    paths = [_GLOB_CHARS.sub(r"\\\1", prefix + p) for p in rel_paths]
    partitions = max(1, -(-len(paths) // files_per_partition))
    return (
        spark.read.format("binaryFile")
        .load(paths)
        .select(F.expr(f"substring(path, {len(prefix) + 1})").alias("rel_path"), "content")
        .repartition(partitions)
    )


def run(spark: SparkSession, conf: Conf, run_id: str, audit: lake.Audit | None = None) -> BronzeResult:
    started = time.monotonic()
    listing, root_uri = list_input(spark, conf.path("input.path"))
    files = with_relative_paths(listing, root_uri, conf["input.extensions"], conf["input.splits"])
    layout = Layout.from_conf(conf)
    bronze = layout.read_or_empty(spark, "bronze")
    quarantine = layout.read_or_empty(spark, "quarantine")
    marked = mark_seen(files, bronze, quarantine).cache()
    # One job counts everything: a run with nothing new costs one listing and one join.
    counts = marked.agg(
        F.count(F.lit(1)).alias("files_seen"),
        F.count_if(F.col("is_image")).alias("images_seen"),
        F.count_if(F.col("is_image") & ~F.col("seen")).alias("new_files"),
    ).first()
    new_files = marked.where(F.col("is_image") & ~F.col("seen")).drop("seen")
    results = {}
    if counts.new_files:
        name_reason = unreadable_name(F.element_at(F.split("rel_path", "/"), -1), not is_remote(root_uri))
        # The inspection (Python, one round trip per partition) runs in the tasks the new files
        # need, not in the listing's partitions: 16 for a few dozen new files, most of their time overhead.
        tasks = inspection_tasks(counts.new_files, conf["bronze.files_per_partition"], spark.sparkContext.defaultParallelism)
        candidates = new_files.select("rel_path", name_reason.alias("name_reason")).coalesce(tasks)
        readable = [r.rel_path for r in candidates.where(F.col("name_reason").isNull()).select("rel_path").collect()]
        contents = read_contents(spark, root_uri, readable, conf["bronze.files_per_partition"])
        inspected = (
            candidates.join(contents, "rel_path", "left").mapInPandas(
                lambda it: inspect_batches(it, conf["bronze.max_image_pixels"], conf["bronze.max_file_bytes"]),
                _INSPECTED_SCHEMA,
            )
            .join(
                new_files.select(
                    F.col("rel_path").alias("path"), "label", "split",
                    F.col("length").alias("source_size_bytes"), F.col("modificationTime").alias("source_modified_at"),
                ),
                "path",
            )
        ).persist(StorageLevel.MEMORY_AND_DISK)  # assign_outcomes reads it twice: one read and inspection of each file
        # Persisted: both staged tables (accepted and rejected rows) come from one read and one
        # inspection of each file, instead of one each.
        outcomes = assign_outcomes(inspected, bronze.select("image_id", "path", "orientation")).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            none_rejected = outcomes.where(F.col("reason").isNotNull()).isEmpty()
            results = lake.write_audit_publish(
                spark, conf, STAGE, run_id,
                {  # the rejections first, bronze last (lake.write_audit_publish: order)
                    "quarantine": lake.Batch(quarantine_rows(outcomes, run_id), QUARANTINE_KEYS, empty=none_rejected),
                    "bronze": lake.Batch(bronze_rows(outcomes, run_id), ("image_id",)),
                },
                audit=audit,
            )
        finally:
            outcomes.unpersist()
            inspected.unpersist()
    rejected = results["quarantine"].inserted_rows if results else 0
    rejected_reasons, rename_to_ingest = _run_quarantine(spark, conf, run_id) if rejected else ({}, [])
    result = BronzeResult(
        files_seen=counts.files_seen, images_seen=counts.images_seen, new_files=counts.new_files,
        ignored_not_image=counts.files_seen - counts.images_seen, already_present=counts.images_seen - counts.new_files,
        new_rows=results["bronze"].inserted_rows if results else 0, rejected=rejected,
        rejected_reasons=rejected_reasons, rename_to_ingest=rename_to_ingest, seconds=round(time.monotonic() - started, 1),
    )
    for frame in (listing, marked):
        frame.unpersist()
    return result


# Reasons whose file is a valid image that a new name gets ingested: said as a warning.
RENAME_TO_INGEST = (CHANGED, "unreadable_name")
RENAMES_SHOWN = 10


def _run_quarantine(spark: SparkSession, conf: Conf, run_id: str) -> tuple[dict[str, int], list[str]]:
    """This run's quarantine rows: count per reason code, and the first paths of RENAME_TO_INGEST rows."""
    rows = (
        spark.read.format("delta").load(Layout.from_conf(conf).location("quarantine"))
        .where((F.col("run_id") == run_id) & (F.col("stage") == STAGE))
        .select("path", F.split("reason", ":").getItem(0).alias("code"))
    )
    counts = {r["code"]: r["count"] for r in rows.groupBy("code").count().collect()}
    renames = rows.where(F.col("code").isin(*RENAME_TO_INGEST)).orderBy("path").limit(RENAMES_SHOWN).collect()
    return counts, [f"{r['path']} ({r['code']})" for r in renames]


def summary_line(result: BronzeResult, run_id: str) -> str:
    reasons = result.rejected_reasons
    rejections = {k: v for k, v in sorted(reasons.items()) if k not in (CHANGED, TOUCHED)}
    changes = ", ".join(f"{k}={reasons[k]}" for k in (CHANGED, TOUCHED) if reasons.get(k))
    line = (
        f"bronze run {run_id}: files seen {result.files_seen} (not images, ignored {result.ignored_not_image}), "
        f"new rows {result.new_rows}, already present {result.already_present}, "
        f"rejected {sum(rejections.values())} ({', '.join(f'{k}={v}' for k, v in rejections.items()) or 'none'}), "
        + (f"changes to ingested files recorded ({changes}), " if changes else "")
        + f"{result.seconds} s"
    )
    renames = sum(reasons.get(code, 0) for code in RENAME_TO_INGEST)
    if renames:
        shown = "; ".join(result.rename_to_ingest) + (f"; ... {renames - RENAMES_SHOWN} more" if renames > RENAMES_SHOWN else "")
        line += (
            f"\nbronze: warning: {renames} valid-looking file(s) not ingested, give each a new file name to "
            f"ingest it (reasons in the quarantine table, run_id '{run_id}'): {shown}"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    code, _ = execute_stage(
        STAGE, args, lambda spark, conf, run_id, audit: run(spark, conf, run_id, audit=audit), summary_line,
        context=lambda conf: {"input": conf.path("input.path")},
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
