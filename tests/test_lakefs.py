"""The Hadoop FileSystem facade on a local folder (the same calls reach S3A: tests/s3)."""

import os
import re

import pytest

from pipelines import lakefs
from pipelines.config import PROJECT_ROOT

# A py4j call into Hadoop's FileSystem: the session's Hadoop configuration, or a class of org.apache.hadoop.fs
# reached through the JVM (conf values naming such a class, as in pipelines/session.py, are not calls).
RAW_FILESYSTEM_CALL = re.compile(r"hadoopConfiguration\(|_jvm\.org\.apache\.hadoop|\.getFileSystem\(")


def test_only_the_facade_reaches_hadoop_filesystem_through_the_jvm():
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{n}"
        for folder in ("pipelines", "quality", "serving")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path != PROJECT_ROOT / "pipelines" / "lakefs.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if RAW_FILESYSTEM_CALL.search(line)
    ]
    assert not offenders, f"raw Hadoop FileSystem calls outside pipelines/lakefs.py: {offenders}"


@pytest.mark.spark
def test_listing_gives_sizes_and_times_and_is_empty_for_an_absent_folder(spark, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.txt").write_bytes(b"1")
    (tmp_path / "a" / "b" / "two.txt").write_bytes(b"22")
    os.utime(tmp_path / "a" / "b" / "two.txt", (1_700_000_000, 1_700_000_000))
    root = str(tmp_path / "a")

    found = {e.location[len(lakefs.qualified(spark, root)) + 1:]: e for e in lakefs.files(spark, root)}
    assert sorted(found) == ["b/two.txt", "one.txt"]
    assert (found["b/two.txt"].size, found["b/two.txt"].modified_ms, found["b/two.txt"].is_dir) == (2, 1_700_000_000_000, False)
    assert [e.name for e in lakefs.files(spark, root, recursive=False)] == ["one.txt"]
    assert sorted((e.name, e.is_dir) for e in lakefs.children(spark, root)) == [("b", True), ("one.txt", False)]
    assert [e.name for e in lakefs.glob(spark, f"{root}/*/*.txt")] == ["two.txt"]
    assert lakefs.files(spark, str(tmp_path / "absent")) == [] and lakefs.children(spark, str(tmp_path / "absent")) == []
    assert lakefs.is_file(spark, f"{root}/one.txt") and not lakefs.is_file(spark, root)
    assert lakefs.status(spark, f"{root}/one.txt").size == 1


@pytest.mark.spark
def test_copies_and_moves_round_trip(spark, tmp_path):
    local = tmp_path / "local.bin"
    local.write_bytes(b"payload")
    lake = tmp_path / "lake"
    lakefs.upload(spark, local, str(lake / "x" / "up.bin"))
    lakefs.put_file(spark, local, str(lake / "put.bin"))
    assert lakefs.read_small_file(spark, str(lake / "x" / "up.bin")) == b"payload"
    assert lakefs.read_small_file(spark, str(lake / "put.bin")) == b"payload"
    assert lakefs.read_small_file(spark, str(lake / "absent.bin")) is None

    lakefs.mkdirs(spark, str(lake / "y" / "z"))
    assert lakefs.rename(spark, str(lake / "x" / "up.bin"), str(lake / "y" / "z" / "moved.bin"))
    lakefs.download(spark, str(lake / "y" / "z" / "moved.bin"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"payload" and not (lake / "x" / "up.bin").exists()


@pytest.mark.spark
def test_delete_stays_strictly_inside_its_folder(spark, tmp_path):
    (tmp_path / "lake" / "staging" / "run").mkdir(parents=True)
    (tmp_path / "lake" / "staging" / "run" / "f").write_text("x")
    inside = str(tmp_path / "lake" / "staging")
    for location in (inside, f"{inside}/../other", f"{inside}//run", str(tmp_path / "elsewhere")):
        with pytest.raises(ValueError, match="refusing to delete"):
            lakefs.delete(spark, location, inside=inside)
    assert (tmp_path / "lake" / "staging" / "run" / "f").exists()
    assert lakefs.delete(spark, f"{inside}/run", inside=inside)
    assert not (tmp_path / "lake" / "staging" / "run").exists()
    assert not lakefs.delete(spark, f"{inside}/run", inside=inside)


def test_the_local_walk_follows_links_and_stops_at_a_loop(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.jpg").write_bytes(b"a")
    top = tmp_path / "in"
    (top / "x").mkdir(parents=True)
    (top / "x" / "link").symlink_to(shared)
    (top / "y").symlink_to(shared)  # one folder linked twice: walked twice, as Spark lists it
    assert sorted(os.path.relpath(e.path, top) for e in lakefs.local_walk(top)) == ["x/link/a.jpg", "y/a.jpg"]
    (top / "x" / "up").symlink_to(top)
    with pytest.raises(lakefs.FolderLoop) as loop:
        list(lakefs.local_walk(top))
    assert (loop.value.link, loop.value.target) == (str(top / "x" / "up"), str(top))
