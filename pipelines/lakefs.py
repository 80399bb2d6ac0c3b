"""The lake's files through Hadoop's FileSystem: the one module that reaches it through the JVM.

Why a facade: Spark's jobs read and write the lake through Hadoop's FileSystem (local disk, HDFS or
S3A alike, with the session's settings: credentials, endpoint, committers), so the few file
operations Spark itself does not do (listing a folder, copying a small file, moving the CSV export
into place, deleting a staging table) go through it too. PySpark has no Python API for it; each
call is a py4j call into the driver's JVM. Keeping them all here, in the spirit of Delta's
`delta/tables.py` (a thin documented layer over the JVM classes), gives the stages plain Python
values (`Entry`, str, bool, bytes) and one place where the Java names and their quirks live.

Locations are strings as the conf and the tables give them (plain paths, `file:/...`, `s3a://...`);
those Hadoop returns (`Entry.location`) are qualified (`file:/...`, `s3a://...`).

The prediction path reads the lake without a JVM through pipelines/lakefiles.py (pyarrow) instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import SparkSession


@dataclass(frozen=True)
class Entry:
    """One file or folder as Hadoop lists it."""

    location: str  # qualified: file:/..., s3a://bucket/...
    size: int  # bytes (0 for a folder)
    modified_ms: int  # modification time, milliseconds since the epoch
    is_dir: bool

    @property
    def name(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]


def _hadoop_fs(spark: SparkSession):
    """The JVM package org.apache.hadoop.fs and the session's Hadoop configuration."""
    return spark.sparkContext._jvm.org.apache.hadoop.fs, spark.sparkContext._jsc.hadoopConfiguration()


def _resolve(spark: SparkSession, location: str):
    """(Hadoop FileSystem, Path) of `location`, with the session's settings."""
    hadoop_fs, hadoop_conf = _hadoop_fs(spark)
    path = hadoop_fs.Path(location)
    return path.getFileSystem(hadoop_conf), path


def _entry(status) -> Entry:
    return Entry(status.getPath().toString(), status.getLen(), status.getModificationTime(), status.isDirectory())


def exists(spark: SparkSession, location: str) -> bool:
    fs, path = _resolve(spark, location)
    return bool(fs.exists(path))


def is_file(spark: SparkSession, location: str) -> bool:
    """True when `location` exists and is a file (not a folder)."""
    fs, path = _resolve(spark, location)
    return bool(fs.exists(path) and fs.getFileStatus(path).isFile())


def status(spark: SparkSession, location: str) -> Entry:
    """The file or folder at `location` (FileNotFoundError, from the JVM, when there is none)."""
    fs, path = _resolve(spark, location)
    return _entry(fs.getFileStatus(path))


def qualified(spark: SparkSession, location: str) -> str:
    """`location` as Hadoop qualifies it (file:/..., s3a://...): how Spark and the metastore name it."""
    fs, path = _resolve(spark, location)
    return fs.makeQualified(path).toString()


def children(spark: SparkSession, folder: str) -> list[Entry]:
    """The files and folders directly in `folder` (none when it does not exist)."""
    fs, path = _resolve(spark, folder)
    if not fs.exists(path):
        return []
    return [_entry(s) for s in fs.listStatus(path)]


def files(spark: SparkSession, folder: str, recursive: bool = True) -> list[Entry]:
    """The files under `folder` (in its sub-folders too when `recursive`), none when it does not exist.

    Hadoop's listFiles: on S3A one paged listing of the prefix instead of a call per sub-folder.
    """
    fs, path = _resolve(spark, folder)
    if not fs.exists(path):
        return []
    found, iterator = [], fs.listFiles(path, recursive)
    while iterator.hasNext():
        found.append(_entry(iterator.next()))
    return found


def glob(spark: SparkSession, pattern: str) -> list[Entry]:
    """The files and folders matching the Hadoop glob `pattern` (`*`, `?`, `[ab]`, `{a,b}`)."""
    fs, path = _resolve(spark, pattern)
    return [_entry(s) for s in fs.globStatus(path) or []]


def mkdirs(spark: SparkSession, folder: str) -> None:
    fs, path = _resolve(spark, folder)
    fs.mkdirs(path)


def rename(spark: SparkSession, source: str, target: str) -> bool:
    """Move `source` to `target` (a copy and a delete on S3A); False when Hadoop could not."""
    fs, source_path = _resolve(spark, source)
    return bool(fs.rename(source_path, _resolve(spark, target)[1]))


def delete(spark: SparkSession, location: str, inside: str, recursive: bool = True) -> bool:
    """Delete `location` (with everything under it when `recursive`) when it is strictly below the
    folder `inside`; refuse anything else, so that no run id, file name or setting can make a
    delete reach outside the folder it is meant for. False when nothing was there."""
    root = inside.rstrip("/")
    parts = location[len(root) + 1:].split("/") if location.startswith(root + "/") else []
    if not parts or "" in parts or {".", ".."} & set(parts):
        raise ValueError(f"refusing to delete '{location}': it is not below '{inside}'")
    fs, path = _resolve(spark, location)
    return bool(fs.delete(path, recursive))


def put_file(spark: SparkSession, local: Path, location: str) -> None:
    """Copy the local file `local` to `location` (local disk or S3A), replacing what is there."""
    fs, path = _resolve(spark, location)
    fs.copyFromLocalFile(False, True, _resolve(spark, local.resolve().as_uri())[1], path)


def upload(spark: SparkSession, local: Path, location: str) -> None:
    """Stream the local file `local` to `location`, replacing what is there.

    Hadoop's FileUtil.copy from the raw local file system (no .crc read): hadoop-aws 3.4.1's S3A
    copyFromLocalFile (put_file) fails on some single files with "Cannot get relative path for URI".
    """
    hadoop_fs, hadoop_conf = _hadoop_fs(spark)
    fs, path = _resolve(spark, location)
    local_fs = hadoop_fs.FileSystem.getLocal(hadoop_conf).getRawFileSystem()
    hadoop_fs.FileUtil.copy(local_fs, hadoop_fs.Path(local.resolve().as_uri()), fs, path, False, True, hadoop_conf)


def download(spark: SparkSession, location: str, local: Path) -> None:
    """Copy the file at `location` to the local file `local` (raw local file system: no .crc file)."""
    fs, path = _resolve(spark, location)
    fs.copyToLocalFile(False, path, _resolve(spark, local.resolve().as_uri())[1], True)


def read_small_file(spark: SparkSession, location: str) -> bytes | None:
    """The bytes of the (small) file at `location`, or None when it does not exist."""
    if not exists(spark, location):
        return None
    with tempfile.TemporaryDirectory(prefix="fruits-read-") as scratch:
        local = Path(scratch) / "file"
        download(spark, location, local)
        return local.read_bytes()


def local_path(location: str) -> Path | None:
    """The local path of a location on this machine's disk, None for a remote one (s3a://...)."""
    if location.startswith("file:"):
        return Path(urlparse(location).path)
    return None if "://" in location else Path(location)


def list_files(spark: SparkSession, root: str) -> list[tuple[str, int, int]]:
    """(path relative to `root`, size, modification time in ms) of every file below the folder `root`,
    following links on local disk as Hadoop's local file system does; OSError when `root` is no
    folder or, on local disk, holds a folder loop."""
    local = local_path(root)
    if local is not None:
        return _local_files(local)
    if not exists(spark, root) or is_file(spark, root):
        raise NotADirectoryError(f"{root} is not a folder")
    prefix = qualified(spark, root).rstrip("/") + "/"
    return [(e.location.removeprefix(prefix), e.size, e.modified_ms) for e in files(spark, root)]


def _local_files(top: Path) -> list[tuple[str, int, int]]:
    if not top.is_dir():
        raise NotADirectoryError(f"{top} is not a folder")
    files = []
    for entry in local_walk(top):
        info = os.stat(entry.path)
        files.append((os.path.relpath(entry.path, top), info.st_size, info.st_mtime_ns // 1_000_000))
    return files


class FolderLoop(OSError):
    """A folder link pointing back at one of its own parent folders: a walk following links has no end."""

    def __init__(self, link: str):
        self.link, self.target = link, os.path.realpath(link)
        super().__init__(f"{link}: a folder loop (a link to {self.target}, a folder above it)")


def local_walk(top: Path) -> Iterator[os.DirEntry]:
    """Every file below the local folder `top`, folder links followed (as Hadoop's local file system
    and Spark's listing do: an input assembled from links, or a link to a shared dataset, is a folder
    like any other; one folder linked twice is walked twice). FolderLoop when a link points back at
    one of its own parents, which would make the walk recurse until the OS refuses the path."""

    def walk(folder: str, parents: tuple[tuple[int, int], ...]) -> Iterator[os.DirEntry]:
        for entry in os.scandir(folder):
            if not entry.is_dir(follow_symlinks=True):
                yield entry
                continue
            info = os.stat(entry.path)
            identity = (info.st_dev, info.st_ino)
            if identity in parents:
                raise FolderLoop(entry.path)
            yield from walk(entry.path, (*parents, identity))

    info = os.stat(top)
    return walk(str(top), ((info.st_dev, info.st_ino),))
