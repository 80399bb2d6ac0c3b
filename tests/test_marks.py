"""Stage marks on real Delta tables: a stage runs again exactly when something it reads changed."""

import os

import pytest

from pipelines import lake, marks
from pipelines.layout import Layout

pytestmark = pytest.mark.spark


class Stage:
    """A stand-in stage body: counts its runs, may commit to a table of the lake while it runs."""

    def __init__(self):
        self.runs = 0
        self.during = None

    def __call__(self):
        self.runs += 1
        if self.during:
            self.during()
        return {"runs": self.runs}


def append(spark, conf, table, value, user_metadata=None):
    """One commit to `table`; with `user_metadata`, as another process would tag it."""
    writer = spark.createDataFrame([(value,)], "v string").write.format("delta").mode("append")
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    writer.save(Layout.from_conf(conf).location(table))


@pytest.fixture
def silver_lake(spark, make_conf, tmp_path):
    conf = make_conf(tmp_path / "input")
    for table in ("bronze", "silver", "quarantine"):
        append(spark, conf, table, "first")
    return conf


def test_latest_commit_and_tag_come_from_the_log(spark, silver_lake):
    location = Layout.from_conf(silver_lake).location("bronze")
    assert lake.latest_commit(spark, location)[0] == 0
    assert lake.latest_commit(spark, location + "-absent") is None
    spark.conf.set(marks.USER_METADATA_KEY, "fruits bronze run r1")  # as run_unless_unchanged sets it
    try:
        append(spark, silver_lake, "bronze", "second")
    finally:
        spark.conf.unset(marks.USER_METADATA_KEY)
    assert lake.latest_commit(spark, location)[0] == 1
    assert lake.commit_user_metadata(spark, location, 1) == "fruits bronze run r1"
    assert lake.commit_user_metadata(spark, location, 0) is None


def test_a_stage_runs_again_only_when_what_it_reads_changed(spark, silver_lake):
    stage, conf = Stage(), silver_lake
    assert marks.run_unless_unchanged(spark, conf, "silver", "r1", stage) == {"runs": 1}
    skipped = marks.run_unless_unchanged(spark, conf, "silver", "r2", stage)
    assert stage.runs == 1 and marks.unchanged(skipped) and skipped.unchanged_since == "r1"
    assert "silver run r2: nothing new since run r1" in marks.summary_line("silver", skipped, "r2")

    append(spark, conf, "gold", "not read by silver")
    marks.run_unless_unchanged(spark, conf, "silver", "r3", stage)
    assert stage.runs == 1

    append(spark, conf, "bronze", "new image")
    marks.run_unless_unchanged(spark, conf, "silver", "r4", stage)
    assert stage.runs == 2
    marks.run_unless_unchanged(spark, conf, "silver", "r5", stage, force=True)  # gold's --refit, say
    assert stage.runs == 3
    other = conf.with_overrides(["silver.batch_size=7"])
    marks.run_unless_unchanged(spark, other, "silver", "r6", stage)
    assert stage.runs == 4
    marks.run_unless_unchanged(spark, conf.with_overrides(["run.id=given"]), "silver", "r7", stage)
    assert stage.runs == 5  # the conf of r6 differs; run.id itself is not compared
    marks.run_unless_unchanged(spark, conf.with_overrides(["run.id=given"]), "silver", "r8", stage)
    assert stage.runs == 5


def test_own_commits_are_seen_another_writers_are_not(spark, silver_lake):
    stage, conf = Stage(), silver_lake
    stage.during = lambda: append(spark, conf, "silver", "featurized")  # tagged by the runner
    marks.run_unless_unchanged(spark, conf, "silver", "r1", stage)
    stage.during = None
    marks.run_unless_unchanged(spark, conf, "silver", "r2", stage)
    assert stage.runs == 1  # its own commit did not make it run again

    # Bronze committed by another process while silver ran: silver must look again next time.
    stage.during = lambda: append(spark, conf, "bronze", "arrived meanwhile", user_metadata="fruits bronze run other")
    append(spark, conf, "bronze", "new")
    marks.run_unless_unchanged(spark, conf, "silver", "r3", stage)
    stage.during = None
    marks.run_unless_unchanged(spark, conf, "silver", "r4", stage)
    assert stage.runs == 3
    marks.run_unless_unchanged(spark, conf, "silver", "r5", stage)
    assert stage.runs == 3


def test_a_failed_run_leaves_no_mark_and_the_switch_turns_marks_off(spark, silver_lake):
    conf = silver_lake

    def failing():
        raise RuntimeError("gate failed")

    with pytest.raises(RuntimeError):
        marks.run_unless_unchanged(spark, conf, "silver", "r1", failing)
    assert marks.read_mark(spark, conf, "silver") is None
    stage, off = Stage(), conf.with_overrides(["run.skip_unchanged=false"])
    marks.run_unless_unchanged(spark, off, "silver", "r2", stage)
    marks.run_unless_unchanged(spark, off, "silver", "r3", stage)
    assert stage.runs == 2 and marks.read_mark(spark, conf, "silver") is None


def test_a_torn_mark_means_a_full_run(spark, silver_lake, tmp_path):
    stage, conf = Stage(), silver_lake
    marks.run_unless_unchanged(spark, conf, "silver", "r1", stage)
    (tmp_path / "lake" / conf["lake.marks"] / "silver.json").write_text('{"stage": "silv', encoding="utf-8")
    marks.run_unless_unchanged(spark, conf, "silver", "r2", stage)
    assert stage.runs == 2


def test_bronze_runs_again_when_the_input_folder_changes(spark, make_conf, tmp_path):
    folder = tmp_path / "input" / "Training" / "Kiwi"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"x")
    conf, stage = make_conf(tmp_path / "input"), Stage()
    marks.run_unless_unchanged(spark, conf, "bronze", "r1", stage)
    marks.run_unless_unchanged(spark, conf, "bronze", "r2", stage)
    assert stage.runs == 1
    (folder / "b.jpg").write_bytes(b"y")
    marks.run_unless_unchanged(spark, conf, "bronze", "r3", stage)
    assert stage.runs == 2
    os.utime(folder / "a.jpg", ns=(0, 10**18))  # same name and size, new content time
    marks.run_unless_unchanged(spark, conf, "bronze", "r4", stage)
    assert stage.runs == 3
    (folder / "b.jpg").unlink()
    marks.run_unless_unchanged(spark, conf, "bronze", "r5", stage)
    assert stage.runs == 4


def test_a_folder_loop_is_no_fingerprint(spark, tmp_path):
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "a" / "up").symlink_to(tmp_path / "in")
    assert marks.input_fingerprint(spark, str(tmp_path / "in")) is None
    assert marks.input_fingerprint(spark, str(tmp_path / "absent")) is None


def test_the_conf_hash_sees_places_not_spellings(make_conf, tmp_path, monkeypatch):
    """Silver exports KERAS_HOME (absolute) while it runs; a later stage of the same process reads
    `${KERAS_HOME:-work/keras}` as that folder: the same place must give the same hash."""
    monkeypatch.delenv("KERAS_HOME", raising=False)
    relative = make_conf(tmp_path / "input")
    monkeypatch.setenv("KERAS_HOME", relative.path("silver.keras_home"))
    absolute = make_conf(tmp_path / "input")
    assert relative["silver.keras_home"] != absolute["silver.keras_home"]
    assert marks.conf_hash(relative) == marks.conf_hash(absolute)
    assert marks.conf_hash(relative) != marks.conf_hash(relative.with_overrides(["silver.keras_home=elsewhere/keras"]))
