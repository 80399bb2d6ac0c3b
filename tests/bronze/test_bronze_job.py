"""Bronze job end to end on real Delta tables in a temporary lake."""

import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from pipelines import bronze
from pipelines.config import PROJECT_ROOT
from pipelines.layout import Layout
from tests.conftest import copy_sample, jpeg_bytes, png_bytes, sample_files

pytestmark = pytest.mark.spark


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def messy_input(tmp_path, sample):
    """20 real images plus one of each kind of bad or odd file."""
    root = tmp_path / "input"
    copy_sample(root, 20)
    label = root / "Training" / "Odd Fruit"
    write(label / "empty.jpg", b"")
    write(label / "truncated.jpg", jpeg_bytes(size=(300, 200))[:1500])
    write(label / "random.jpg", os.urandom(4096))
    write(label / "alpha.PNG", png_bytes())
    write(label / "grey é ü.jpeg", jpeg_bytes(mode="L", color=128))
    write(label / "notes.txt", b"not an image")
    write(root / "orphan.jpg", jpeg_bytes(color=(1, 2, 3)))
    first = sample_files(1)[0]
    write(label / "copy of first[1].jpg", first.read_bytes())  # same bytes under a second path
    return root


def read(spark, conf, table):
    return spark.read.format("delta").load(Layout.from_conf(conf).location(table))


def test_bronze_ingests_rejects_and_reconciles(spark, make_conf, messy_input):
    conf = make_conf(messy_input)

    stats = bronze.run(spark, conf, "run-1")

    rows = {r.path: r for r in read(spark, conf, "bronze").collect()}
    rejected = {r.path: r.reason for r in read(spark, conf, "quarantine").collect()}
    assert stats.files_seen == 28 and stats.ignored_not_image == 1
    assert stats.new_rows == len(rows) == 22  # 20 real + alpha PNG + grey JPEG
    assert stats.rejected == len(rejected) == 5
    assert stats.new_rows + stats.rejected + stats.ignored_not_image == stats.files_seen
    assert {p: r.split(":")[0] for p, r in rejected.items()} == {
        "Training/Odd Fruit/empty.jpg": "empty_file",
        "Training/Odd Fruit/truncated.jpg": "malformed_jpeg",
        "Training/Odd Fruit/random.jpg": "not_an_image",
        "orphan.jpg": "no_label",
        "Training/Odd Fruit/copy of first[1].jpg": "duplicate",
    }
    first = sample_files(1)[0]
    owner = f"Training/{first.parent.name}/{first.name}"
    assert owner in rejected["Training/Odd Fruit/copy of first[1].jpg"]
    row = rows[owner]
    assert row.label == first.parent.name and row.split == "Training"
    assert row.image_id == hashlib.sha256(row.content).hexdigest() and row.size_bytes == len(row.content)
    assert row.source_size_bytes == first.stat().st_size and row.run_id == "run-1"
    assert rows["Training/Odd Fruit/grey é ü.jpeg"].label == "Odd Fruit"
    assert Image.open(io.BytesIO(rows["Training/Odd Fruit/alpha.PNG"].content)).mode == "RGBA"
    assert read(spark, conf, "bronze").select("image_id").distinct().count() == len(rows)


def test_rerun_adds_nothing_and_new_files_add_only_their_rows(spark, make_conf, tmp_path, sample):
    root = tmp_path / "input"
    copy_sample(root, 30)
    conf = make_conf(root)
    first = bronze.run(spark, conf, "run-1")
    again = bronze.run(spark, conf, "run-2")
    for src in sample_files(10, "Test"):
        target = root / "Test" / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    more = bronze.run(spark, conf, "run-3")

    assert (first.new_rows, again.new_rows, again.already_present) == (30, 0, 30)
    assert (more.new_rows, more.already_present, more.rejected) == (10, 30, 0)
    table = read(spark, conf, "bronze")
    assert table.count() == 40 and table.select("path").distinct().count() == 40
    assert {r.run_id for r in table.where("split = 'Test'").collect()} == {"run-3"}
    assert not list((tmp_path / "lake" / "_staging").glob("bronze/*/run-3"))
    assert (tmp_path / "lake" / "_staging" / "bronze" / "bronze").is_dir()  # the layout the check above relies on


def test_file_rewritten_in_place_is_quarantined_not_ignored(spark, make_conf, tmp_path):
    root = tmp_path / "input"
    target = write(root / "Kiwi" / "k.jpg", jpeg_bytes(color=(10, 200, 10)))
    conf = make_conf(root)
    bronze.run(spark, conf, "run-1")
    write(target, jpeg_bytes(size=(33, 24), color=(200, 10, 10)))
    os.utime(target, (1_900_000_000, 1_900_000_000))

    stats = bronze.run(spark, conf, "run-2")
    third = bronze.run(spark, conf, "run-3")

    assert stats.new_rows == 0 and stats.rejected == 1
    reason = read(spark, conf, "quarantine").where("run_id = 'run-2'").first().reason
    assert reason.startswith("changed_since_ingest")
    assert third.new_files == 0


def test_missing_input_folder_is_a_clear_error(spark, make_conf, tmp_path):
    conf = make_conf(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="input.path"):
        bronze.run(spark, conf, "run-1")


def test_failed_audit_publishes_nothing(spark, make_conf, tmp_path):
    root = tmp_path / "input"
    write(root / "Kiwi" / "k.jpg", jpeg_bytes())
    conf = make_conf(root)

    def refuse(staged):
        assert staged.batch.count() == 1  # the audit sees the staged batch
        raise RuntimeError("gate failed")

    with pytest.raises(RuntimeError, match="gate failed"):
        bronze.run(spark, conf, "run-1", audit=refuse)
    assert Layout.from_conf(conf).read(spark, "bronze") is None
    assert bronze.run(spark, conf, "run-2").new_rows == 1


def test_main_under_spark_submit_prints_one_line_summary(tmp_path, sample):
    """The job runs with spark-submit too (options from `python -m pipelines.session --submit-args`)."""
    root = tmp_path / "input"
    copy_sample(root, 3)
    overrides = ["--set", f"input.path={root}", "--set", f"lake.root={tmp_path / 'lake'}", "--set", "spark.master=local[1]"]
    python = sys.executable
    submit = subprocess.run(
        [python, "-m", "pipelines.session", "--submit-args", *overrides], capture_output=True, text=True, check=True
    ).stdout
    submit = shlex.split(submit)
    spark_submit = os.path.join(os.path.dirname(__import__("pyspark").__file__), "bin", "spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    done = subprocess.run(
        [spark_submit, *submit, str(PROJECT_ROOT / "pipelines" / "bronze.py"), *overrides],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = [line for line in done.stdout.splitlines() if line.startswith("bronze run ")]
    assert len(summary) == 1 and "new rows 3," in summary[0] and "rejected 0" in summary[0]
