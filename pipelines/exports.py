"""Gold's exports: the gold matrix as Parquet and CSV files, one part per gold run, kept equal to gold.

Why per run: rewriting the whole matrix on every run costs what the lake holds, not what the run
added (52 MB for the 6,270-image sample, gigabytes per daily increment at a million images). Each
gold row carries the run that wrote it (`run_id`) and the model that projected it
(`model_version`), so the export is laid out by those two, in Hive-style folders that Spark, pyarrow
and pandas read as columns:

    <lake.root>/<lake.exports>/<gold.export_parquet_dir>/model_version=<v>/run_id=<r>/part-*.parquet
    <lake.root>/<lake.exports>/<gold.export_csv_dir>/model_version=<v>/run_id=<r>/<gold.export_csv_name>

An incremental run adds one part (its own rows); a refit, whose rows all carry the refit's run id,
writes one part under its new model version, then deletes every other version's folder.

Why "kept equal to gold" instead of "append this run's rows": the parts are written after gold's
commit, from the committed table, and every gold run (a no-op included) compares the parts present
with gold's (model_version, run_id) pairs, writes the missing ones and deletes the others. So:

- a run killed between its gold commit and its export leaves a part missing, which the next run
  writes (its rows come from gold, so they are the committed ones, never a staged batch);
- nothing is exported before it is committed, so a crash can never leave exported rows that gold
  does not hold, and a rerun cannot export an image twice (gold holds each image once, in one run);
- a part is complete when its Parquet folder holds `_SUCCESS` and its CSV file exists (renamed into
  place last); an incomplete part is rewritten, a part of a run gold no longer holds is deleted;
- a rerun with the same run id finds its part complete and writes nothing (idempotent by run id).

Readers see one model version, except during a refit (and after a refit killed before its clean-up,
until the next gold run): the new version's folder is written before the old one is deleted, so
take the greatest `model_version` (versions sort by fit time). docs/gold.md says how to read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import lakefs
from pipelines.config import Conf
from pipelines.layout import Layout

STAGE = "gold"
SUCCESS = "_SUCCESS"


class ExportError(RuntimeError):
    """An export file could not be put in place; the message names it and what to check."""


def export_frame(gold: DataFrame, k: int, paths: DataFrame | None = None) -> DataFrame:
    """The gold matrix with one column per component: image_id, label, split, path, pc_1 .. pc_k.

    `path` is the image's source (bronze's `path`, from `paths`: image_id, path), so that a reader
    of the matrix, such as the prediction service showing the images nearest a photo, can open the
    image itself; null where `paths` lacks the image (or is None).
    """
    if paths is None:
        rows = gold.withColumn("path", F.lit(None).cast("string"))
    else:
        rows = gold.join(paths.select("image_id", "path"), "image_id", "left")
    # One SQL list, parsed by the JVM: a Column per component is k round trips to it (~1.5 s for k = 411).
    return rows.selectExpr("image_id", "label", "split", "path", *[f"pca[{i}] AS pc_{i + 1}" for i in range(k)])


def gold_runs(gold: DataFrame) -> dict[tuple[str, str], int]:
    """Rows of gold per (model_version, run_id): one small aggregate, the parts the export must hold."""
    return {(r["model_version"], r["run_id"]): r["count"] for r in gold.groupBy("model_version", "run_id").count().collect()}


def roots(conf: Conf) -> dict[str, str]:
    """The Parquet and CSV export folders (conf lake.exports, gold.export_parquet_dir, gold.export_csv_dir)."""
    exports = Layout.from_conf(conf).exports
    return {"parquet": f"{exports}/{conf['gold.export_parquet_dir']}", "csv": f"{exports}/{conf['gold.export_csv_dir']}"}


def part_folder(root: str, model_version: str, run_id: str) -> str:
    """`<root>/model_version=<v>/run_id=<r>`, values percent-encoded as Spark and pyarrow decode them
    (a run id may hold ':' and '+', which Hadoop's local file system cannot put in a file name)."""
    return f"{root}/model_version={quote(model_version, safe='')}/run_id={quote(run_id, safe='')}"


def sync(
    spark: SparkSession, conf: Conf, run_id: str, gold: DataFrame, k: int, runs: Mapping[tuple[str, str], int]
) -> dict:
    """Make the exports hold exactly gold's rows: write the parts of `runs` missing or incomplete,
    then delete every other part and any file of the old whole-matrix layout.

    `runs` is gold_runs(gold) of the committed table. Returns the two roots, the parts written
    ("<model_version>/<run_id>") and the folders or files deleted.
    """
    where = roots(conf)
    present = _complete_parts(spark, conf, where)
    layout = Layout.from_conf(conf)
    paths = layout.read(spark, "bronze")
    written = []
    for n, (version, part_run) in enumerate(sorted(key for key in runs if key not in present)):
        part = gold.where((F.col("model_version") == version) & (F.col("run_id") == part_run))
        # Computed once for both files; on disk: a refit's part is the whole matrix, kept off the heap.
        rows = export_frame(part, k, paths).persist(StorageLevel.DISK_ONLY)
        try:
            rows.write.mode("overwrite").parquet(part_folder(where["parquet"], version, part_run))
            write_single_csv(
                spark, rows.coalesce(1).sortWithinPartitions("split", "label", "image_id"),
                f"{part_folder(where['csv'], version, part_run)}/{conf['gold.export_csv_name']}",
                layout.staging(f"{STAGE}/csv", f"{run_id}-{n}"),
            )
        finally:
            rows.unpersist()
        written.append(f"{version}/{part_run}")
    removed = _remove_other_parts(spark, where, set(runs))
    return {**where, "written": written, "removed": removed}


def _complete_parts(spark: SparkSession, conf: Conf, where: dict[str, str]) -> set[tuple[str, str]]:
    """(model_version, run_id) of the parts whose Parquet folder has _SUCCESS and whose CSV file exists."""
    parquet = {key for key, folder in _part_folders(spark, where["parquet"]) if lakefs.exists(spark, f"{folder}/{SUCCESS}")}
    csv = {
        key for key, folder in _part_folders(spark, where["csv"])
        if lakefs.exists(spark, f"{folder}/{conf['gold.export_csv_name']}")
    }
    return parquet & csv


def _part_folders(spark: SparkSession, root: str) -> list[tuple[tuple[str, str], str]]:
    """((model_version, run_id), folder) of every part folder under `root` (a listing, no file read)."""
    parts = []
    for version_folder in _list(spark, root):
        version = _partition_value(version_folder, "model_version")
        if version is None:
            continue
        for run_folder in _list(spark, version_folder):
            part_run = _partition_value(run_folder, "run_id")
            if part_run is not None:
                parts.append(((version, part_run), run_folder))
    return parts


def _remove_other_parts(spark: SparkSession, where: dict[str, str], keep: set[tuple[str, str]]) -> list[str]:
    """Delete, under both roots, the part folders not in `keep`, version folders left empty, and
    everything else (the whole-matrix files of the old layout, a crashed write's leftovers)."""
    removed = []
    for root in where.values():
        for entry in _list(spark, root, hidden=True):
            version = _partition_value(entry, "model_version")
            runs = [] if version is None else _list(spark, entry, hidden=True)
            stale = [f for f in runs if (version, _partition_value(f, "run_id")) not in keep]
            for target in [entry] if version is None or len(stale) == len(runs) else stale:
                lakefs.delete(spark, target, inside=root)
                removed.append(target)
    return removed


def _list(spark: SparkSession, folder: str, hidden: bool = False) -> list[str]:
    """Entries of `folder` (none when absent), without names starting with '_' or '.' unless `hidden`."""
    entries = [f"{folder}/{entry.name}" for entry in lakefs.children(spark, folder)]
    return sorted(e for e in entries if hidden or not e.rsplit("/", 1)[-1].startswith(("_", ".")))


def _partition_value(entry: str, column: str) -> str | None:
    name = entry.rsplit("/", 1)[-1]
    return unquote(name[len(column) + 1:]) if name.startswith(f"{column}=") else None


def write_single_csv(spark: SparkSession, frame: DataFrame, target: str, scratch: str) -> None:
    """Write a one-partition frame as the single CSV file `target`, through Hadoop's FileSystem.

    Spark writes a folder of part files; the one part file is renamed to the stable name (a copy on
    S3A), so the file appears whole or not at all. Quotes are escaped RFC 4180 style, so any CSV
    reader parses it.
    """
    frame.write.mode("overwrite").option("header", True).option("escape", '"').csv(scratch)
    parts = lakefs.glob(spark, f"{scratch}/part-*")
    if len(parts) != 1:
        raise ExportError(f"expected one part file in '{scratch}', found {len(parts)}: the CSV export needs coalesce(1)")
    folder = target.rsplit("/", 1)[0]
    lakefs.mkdirs(spark, folder)
    lakefs.delete(spark, target, inside=folder, recursive=False)
    if not lakefs.rename(spark, parts[0].location, target):
        raise ExportError(f"could not move the CSV export to '{target}' (check write access to that folder)")
    lakefs.delete(spark, scratch, inside=scratch.rsplit("/", 1)[0])
