"""Hostile inputs, round 2 (docs/reliability.md, "Bad inputs"): each through bronze's own `main` with its gate.

What a hostile user tried and what must hold: a file touched, rewritten, renamed or moved after
ingestion is recorded once and never blocks the images that come with it; every legal file name
is ingested or quarantined with a reason; a run id is never a path; a user's mistake (an input or
lake that is a file, an empty setting, a damaged lake, a folder link loop) ends in one line with
exit 2. The mains run in this process (build_spark_session joins the test session); stdout and
stderr are Python's, so a traceback would show in them.
"""

from __future__ import annotations

import io
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines import bronze, lake
from pipelines.config import load_conf
from pipelines.layout import Layout
from quality import gates, outcomes
from tests.reliability.inputs import distinct_jpeg, write_hostile_names, write_images

pytestmark = pytest.mark.spark


@dataclass
class Step:
    code: int
    out: str
    err: str


def run_bronze(lake_root: Path | str, input_path: Path | str, *sets: str) -> Step:
    settings = [f"lake.root={lake_root}", f"input.path={input_path}", "spark.master=local[2]", "spark.shuffle_partitions=2", *sets]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = bronze.main(["--conf", "conf/local.yaml", *(a for s in settings for a in ("--set", s))])
    return Step(code, out.getvalue(), err.getvalue())


def quarantine_reasons(spark, conf) -> dict[str, list[str]]:
    """path -> the reason codes of its bronze quarantine rows, oldest first."""
    rows = (
        spark.read.format("delta").load(Layout.from_conf(conf).location("quarantine"))
        .where(F.col("stage") == "bronze").orderBy("recorded_at").select("path", "reason").collect()
    )
    reasons: dict[str, list[str]] = {}
    for row in rows:
        reasons.setdefault(row["path"], []).append(row["reason"].split(":")[0])
    return reasons


def bronze_paths(spark, conf) -> list[str]:
    return sorted(r["path"] for r in spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).select("path").collect())


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


# ---------------------------------------------------------------- files changed after ingestion


def test_changed_touched_renamed_files_are_recorded_once_and_never_block_ingestion(spark, tmp_path):
    source, lake_root = tmp_path / "input", tmp_path / "lake"
    conf = load_conf(["conf/local.yaml"], [f"lake.root={lake_root}", f"input.path={source}"])
    kiwis = write_images(source, "Kiwi", ["k0.jpg", "k1.jpg", "k2.jpg"], 0)
    write_images(source, "Banana", ["b0.jpg", "b1.jpg", "b2.jpg"], 3)
    assert run_bronze(lake_root, source).code == 0

    # Touched (same bytes, newer time), rewritten with other pixels (also copied under a new name),
    # emptied, a label folder renamed, 3 new images.
    os.utime(kiwis[0], (kiwis[0].stat().st_atime, kiwis[0].stat().st_mtime + 60))
    kiwis[1].write_bytes(distinct_jpeg(40))
    shutil.copy2(kiwis[1], kiwis[1].with_name("k1 copy.jpg"))
    kiwis[2].write_bytes(b"")
    (source / "Training" / "Banana").rename(source / "Training" / "Banana Ripe")
    write_images(source, "Kiwi", ["new0.jpg", "new1.jpg", "new2.jpg"], 10)
    step = run_bronze(lake_root, source)

    assert step.code == 0, step.err
    assert "new rows 4" in step.out and "rejected 4 (duplicate=3, empty_file=1)" in step.out, step.out
    assert "changed_since_ingest=1, touched_since_ingest=1" in step.out, step.out
    assert "warning: 1 valid-looking file(s) not ingested" in step.out and "Training/Kiwi/k1.jpg (changed_since_ingest)" in step.out
    reasons = quarantine_reasons(spark, conf)
    assert reasons == {
        "Training/Kiwi/k0.jpg": ["touched_since_ingest"],
        "Training/Kiwi/k1.jpg": ["changed_since_ingest"],
        "Training/Kiwi/k2.jpg": ["empty_file"],
        **{f"Training/Banana Ripe/b{n}.jpg": ["duplicate"] for n in range(3)},
    }
    assert "Training/Kiwi/k1 copy.jpg" in bronze_paths(spark, conf) and len(bronze_paths(spark, conf)) == 10
    last = outcomes.latest(spark, conf)["bronze"]
    assert last.success and last.metrics["batch_quarantined_known"] == 6 and last.metrics["batch_quarantine_rate"] == 0.0
    gates.require_upstream_passed(spark, conf, "silver")  # silver may run

    # A rerun finds nothing new: the recorded files are no candidates again (read in full, marks
    # off), and by default the input and the tables are as the last run left them: no read at all.
    rerun = run_bronze(lake_root, source, "run.skip_unchanged=false")
    assert rerun.code == 0 and "new rows 0, already present 10" in rerun.out, rerun.out
    assert quarantine_reasons(spark, conf) == reasons
    skipped = run_bronze(lake_root, source)
    assert skipped.code == 0 and "nothing new since run" in skipped.out, skipped.out

    # Touched once more: one more record, still no block.
    os.utime(kiwis[0], (kiwis[0].stat().st_atime, kiwis[0].stat().st_mtime + 60))
    again = run_bronze(lake_root, source)
    assert again.code == 0, again.err
    assert quarantine_reasons(spark, conf)["Training/Kiwi/k0.jpg"] == ["touched_since_ingest"] * 2


def test_a_failed_quarantine_rate_names_its_files_in_the_message_and_the_data_docs(spark, tmp_path):
    source, lake_root = tmp_path / "input", tmp_path / "lake"
    write_images(source, "Kiwi", ["k0.jpg", "k1.jpg"], 0)
    (source / "Training" / "Kiwi" / "broken upload.jpg").write_bytes(distinct_jpeg(5)[:300])

    step = run_bronze(lake_root, source)

    assert step.code == 1
    assert "batch_quarantine_rate" in step.err and "Training/Kiwi/broken upload.jpg: unreadable_header" in step.err, step.err
    conf = load_conf(["conf/local.yaml"], [f"lake.root={lake_root}"])
    last = outcomes.latest(spark, conf)["bronze"]  # what `python -m quality.report` prints
    assert any("Training/Kiwi/broken upload.jpg: unreadable_header" in failure for failure in last.failed_expectations)
    # Data Docs: the suite's page, with the notes of the rate that this batch failed (GX 1.24's
    # validation page does not render notes).
    suite_page = Path(last.docs_index).parent / "expectations" / "bronze_totals.html"
    assert "Training/Kiwi/broken upload.jpg" in suite_page.read_text(encoding="utf-8")
    assert Layout.from_conf(conf).read(spark, "bronze") is None


def test_new_empty_uploads_count_as_rejections_even_after_an_earlier_empty_file(spark, tmp_path):
    """Every empty file has the same content hash: one quarantined before must not make later ones 'known'."""
    source, lake_root = tmp_path / "input", tmp_path / "lake"
    write_images(source, "Kiwi", [f"k{n}.jpg" for n in range(30)], 0)
    (source / "Training" / "Kiwi" / "empty.jpg").write_bytes(b"")
    assert run_bronze(lake_root, source).code == 0  # 1 of 31 quarantined: under 5 %

    write_images(source, "Kiwi", ["late.jpg"], 40)
    for name in ("sync failed 1.jpg", "sync failed 2.jpg"):
        (source / "Training" / "Kiwi" / name).write_bytes(b"")
    step = run_bronze(lake_root, source)

    assert step.code == 1 and "observed 0.666667" in step.err and "sync failed 1.jpg: empty_file" in step.err, step.err


# ---------------------------------------------------------------- file names


def test_every_legal_file_name_is_ingested_or_quarantined_with_a_reason(spark, tmp_path):
    source, lake_root = tmp_path / "input", tmp_path / "lake"
    written = write_hostile_names(source)
    write_images(source, "Plain", [f"p{n}.jpg" for n in range(20)], 100)  # one unreadable name in 36 files

    step = run_bronze(lake_root, source)

    assert step.code == 0, step.err
    conf = load_conf(["conf/local.yaml"], [f"lake.root={lake_root}"])
    ingested, reasons = set(bronze_paths(spark, conf)), quarantine_reasons(spark, conf)
    assert reasons == {"Training/Kiwi/kiwi:2024-01-01T10:00.jpg": ["unreadable_name"]}
    assert set(written) - set(reasons) <= ingested and len(ingested) == len(written) - 1 + 20
    assert "Training/Kiwi/kiwi:2024-01-01T10:00.jpg (unreadable_name)" in step.out
    labels = {r["label"] for r in spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).collect()}
    assert {"Ban#ana %20 ?", "Fig:Dried"} <= labels


# ---------------------------------------------------------------- run ids


def test_a_run_id_that_is_a_path_is_refused_and_nothing_is_written_or_deleted_outside_the_lake(spark, tmp_path):
    source, lake_root = tmp_path / "input", tmp_path / "deep" / "er" / "lake"
    write_images(source, "Kiwi", ["k0.jpg"], 0)
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "keep.txt").write_text("must survive")

    step = run_bronze(lake_root, source, "run.id=../../../../elsewhere")

    assert step.code == 2 and one_line(step.err) and "run.id" in step.err, step.err
    assert (victim / "keep.txt").read_text() == "must survive" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert not lake_root.exists()


def test_a_scheduler_run_id_works_and_its_staging_is_removed(spark, tmp_path):
    source, lake_root = tmp_path / "input", tmp_path / "lake"
    write_images(source, "Kiwi", ["k0.jpg", "k1.jpg"], 0)
    run_id = "scheduled__2026-12-01T00:00:00+00:00"

    step = run_bronze(lake_root, source, f"run.id={run_id}")

    assert step.code == 0, step.err
    conf = load_conf(["conf/local.yaml"], [f"lake.root={lake_root}"])
    assert {r["run_id"] for r in spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).collect()} == {run_id}
    assert not Path(Layout.from_conf(conf).staging("bronze/bronze", run_id)).exists()


def test_drop_staging_refuses_a_location_outside_the_staging_folder(spark, tmp_path):
    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
    for run_id in ("../../../elsewhere", "..", "a/../../b"):
        with pytest.raises(ValueError, match="refusing to delete"):
            lake.drop_staging(spark, conf, "bronze/bronze", run_id)
    escaped = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}", "lake.staging=../outside"])
    with pytest.raises(ValueError, match="refusing to delete"):
        lake.drop_staging(spark, escaped, "bronze/bronze", "run-1")


# ---------------------------------------------------------------- one line for a user's mistake


@pytest.fixture(scope="module")
def published_lake(spark, tmp_path_factory) -> tuple[Path, Path]:
    """An input and a lake where bronze has published twice (two data files, two log entries)."""
    root = tmp_path_factory.mktemp("published")
    source, lake_root = root / "input", root / "lake"
    write_images(source, "Kiwi", ["k0.jpg", "k1.jpg"], 0)
    assert run_bronze(lake_root, source).code == 0
    write_images(source, "Kiwi", ["k2.jpg"], 2)
    assert run_bronze(lake_root, source).code == 0
    return source, lake_root


def damaged_copy(lake_root: Path, target: Path, damage: str) -> Path:
    shutil.copytree(lake_root, target)
    table = target / "bronze"
    if damage == "data file":
        next(table.glob("part-*.parquet")).unlink()
    else:  # the last log entry cut in the middle of its JSON, its checksum file gone with it
        entry = sorted((table / "_delta_log").glob("*.json"))[-1]
        entry.write_bytes(entry.read_bytes()[:150])
        for crc in (table / "_delta_log").glob(f".{entry.name}.crc"):
            crc.unlink()
    return target


@pytest.mark.parametrize(
    "mistake, expected",
    [
        ("input is a file", "is a file, not a folder"),
        ("lake is a file", "lake.root"),
        ("empty input", "'input.path' is empty"),
        ("empty lake", "'lake.root' is empty"),
        ("missing data file", "is damaged"),
        ("truncated log entry", "is damaged"),
        ("folder link loop", "points back at one of its own parent"),
    ],
)
def test_a_users_mistake_is_one_line_with_exit_2(spark, tmp_path, published_lake, mistake, expected):
    source, lake_root = published_lake
    if mistake == "input is a file":
        step = run_bronze(tmp_path / "lake", source / "Training" / "Kiwi" / "k0.jpg")
    elif mistake == "lake is a file":
        (tmp_path / "lake.txt").write_text("not a lake")
        step = run_bronze(tmp_path / "lake.txt", source)
    elif mistake == "empty input":
        step = run_bronze(tmp_path / "lake", "")
    elif mistake == "empty lake":
        step = run_bronze("", source)
    elif mistake in ("missing data file", "truncated log entry"):
        damaged = damaged_copy(lake_root, tmp_path / "damaged", "data file" if mistake == "missing data file" else "log")
        step = run_bronze(damaged, source)
    else:
        looped = tmp_path / "looped"
        write_images(looped, "Kiwi", ["k0.jpg"], 0)
        (looped / "Training" / "Kiwi" / "again").symlink_to(looped / "Training")
        step = run_bronze(tmp_path / "lake", looped)

    assert step.code == 2, (step.out, step.err)
    assert one_line(step.err) and expected in step.err, step.err
    if mistake.endswith(("data file", "log entry")):
        assert str(tmp_path / "damaged" / "bronze") in step.err


def test_a_folder_link_to_images_outside_the_input_is_followed(spark, tmp_path):
    """Documented choice (docs/reliability.md): an input assembled from folder links is ingested like any folder."""
    outside = tmp_path / "outside"
    write_images(outside, "Pear", ["p0.jpg", "p1.jpg"], 0)
    source = tmp_path / "input"
    (source / "Training").mkdir(parents=True)
    (source / "Training" / "Pear").symlink_to(outside / "Training" / "Pear")

    step = run_bronze(tmp_path / "lake", source)

    assert step.code == 0, step.err
    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
    assert bronze_paths(spark, conf) == ["Training/Pear/p0.jpg", "Training/Pear/p1.jpg"]
