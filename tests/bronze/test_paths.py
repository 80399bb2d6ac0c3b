"""Label, split and image-extension parsing from listed paths (a transform on a tiny listing, no I/O);
the inspection's task count."""

from datetime import datetime

import pytest

from pipelines.bronze import inspection_tasks, with_relative_paths

SPLITS = ["Training", "Test"]
ROOT = "file:/data/input"


def parsed(spark, rel_paths, extensions=("jpg", "jpeg", "png")):
    listing = spark.createDataFrame(
        [(f"{ROOT}/{p}", 1, datetime(2026, 1, 1)) for p in rel_paths], "path string, length long, modificationTime timestamp"
    )
    rows = with_relative_paths(listing, ROOT, list(extensions), SPLITS).collect()
    return {r["rel_path"]: r for r in rows}


LABELS = [
    ("Training/Apple Braeburn/r_100_100.jpg", ("Apple Braeburn", "Training")),
    ("Test/Pear Monster/3_100.jpg", ("Pear Monster", "Test")),
    ("Kiwi/a.png", ("Kiwi", None)),
    ("new/2026/Training/Mango Red/x.jpg", ("Mango Red", "Training")),
    ("Training/orphan.jpg", (None, "Training")),
    ("orphan.jpg", (None, None)),
    ("Tést/Pêche plate/été 1.jpg", ("Pêche plate", None)),
    ("Test/Training/Fig/f.jpg", ("Fig", "Test")),
]


def test_label_is_the_holding_folder_and_split_the_first_split_folder(spark):
    rows = parsed(spark, [path for path, _ in LABELS])
    assert {path: (rows[path]["label"], rows[path]["split"]) for path, _ in LABELS} == dict(LABELS)


EXTENSIONS = [
    ("a.jpg", True), ("a.JPEG", True), ("b.Png", True), ("c.gif", False), ("README", False), ("x.jpg.txt", False),
    ("jpg", False), ("d.", False), ("e.jpg\n", False), ("f.tar.png", True),
]


@pytest.mark.parametrize("extensions", [("jpg", "jpeg", "png"), ("JPG", "JPEG", "PNG")])
def test_image_extension_in_any_case(spark, extensions):
    rows = parsed(spark, [f"Label/{name}" for name, _ in EXTENSIONS], extensions)
    assert {name: rows[f"Label/{name}"]["is_image"] for name, _ in EXTENSIONS} == dict(EXTENSIONS)


def test_image_extensions_are_matched_without_lower(spark):
    """The first lower() in a Spark 4 JVM computes ICU's title case of every Unicode code point
    (seconds of a cold stage): the listing's parsing must not call it."""
    listing = spark.createDataFrame([(f"{ROOT}/Kiwi/a.JPG", 1, datetime(2026, 1, 1))], "path string, length long, modificationTime timestamp")
    plan = with_relative_paths(listing, ROOT, ["jpg", "jp+g"], SPLITS)._jdf.queryExecution().analyzed().toString()
    assert "lower(" not in plan.lower() and "(?i)[.](jpg|jp\\+g)\\z" in plan


def test_no_extension_configured_means_no_image(spark):
    rows = parsed(spark, ["Label/a.jpg", "Label/b."], extensions=())
    assert [rows[p]["is_image"] for p in ("Label/a.jpg", "Label/b.")] == [False, False]


def test_a_path_outside_the_root_has_no_relative_path(spark):
    listing = spark.createDataFrame([("file:/elsewhere/Kiwi/a.jpg", 1, datetime(2026, 1, 1))], "path string, length long, modificationTime timestamp")
    row = with_relative_paths(listing, ROOT, ["jpg"], SPLITS).first()
    assert (row["rel_path"], row["label"], row["is_image"]) == (None, None, None)


@pytest.mark.parametrize(
    "new_files, per_partition, cores, tasks",
    [(60, 512, 2, 2), (1, 512, 2, 1), (6270, 512, 2, 13), (6270, 512, 32, 32), (3, 512, 8, 3), (0, 512, 2, 1)],
)
def test_the_inspection_runs_in_the_tasks_the_new_files_need(new_files, per_partition, cores, tasks):
    """A few dozen new files: one task per core, not the listing's 16 partitions, each a Python round trip."""
    assert inspection_tasks(new_files, per_partition, cores) == tasks
