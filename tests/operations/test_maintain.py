"""Maintenance (pipelines/maintain.py): small files compacted with the rows unchanged, old versions
kept for the retention conf gives, bronze's retention erasing expired images everywhere through
pipelines/erase.py, settings checked before anything changes, and the lake lock respected."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone

import pytest

from pipelines import erase, lake, lock, maintain
from pipelines.layout import Layout
from tests.quality.conftest import bronze_rows, features, silver_rows

pytestmark = pytest.mark.spark

OLD = datetime(2026, 1, 2, tzinfo=timezone.utc)
IDS = [f"{i:064x}" for i in range(101, 105)]


def run_command(main, conf, *args: str) -> tuple[int, str, str]:
    """`main` (a command's entry point) with the conf's overrides and `args`: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    sets = [a for item in conf.sources if item.startswith("--set ") for a in ("--set", item[len("--set "):])]
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--conf", "conf/local.yaml", *sets, *args])
    return code, out.getvalue(), err.getvalue()


def run_maintain(conf, *args: str) -> tuple[int, str, str]:
    return run_command(maintain.main, conf, *args)


@pytest.fixture
def small_lake(spark, make_conf, tmp_path):
    """bronze and silver in four one-row commits each: two images ingested long ago, two now; the
    source files of all four in the input folder."""
    conf = make_conf(tmp_path / "input")
    now = datetime.now(timezone.utc)
    for n, image_id in enumerate(IDS):
        when = OLD if n < 2 else now
        rows = bronze_rows(spark, [image_id], f"r{n}", {0: {"path": f"Training/Apple Red 1/{n}_100.jpg", "ingested_at": when}})
        lake.publish(spark, rows, Layout.from_conf(conf).location("bronze"), ("image_id",))
        lake.publish(spark, silver_rows(spark, [(image_id, features(n))], f"r{n}"), Layout.from_conf(conf).location("silver"), ("image_id",))
        source = tmp_path / "input" / "Training" / "Apple Red 1" / f"{n}_100.jpg"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(b"photo")
    return conf


# make test-long: the suite's time goes to the retention run and the erasure below; OPTIMIZE's
# compaction is measured by bench.maintenance (100 files per table down to 1).
@pytest.mark.long
def test_optimize_compacts_the_small_files_and_keeps_the_rows(spark, small_lake):
    location = Layout.from_conf(small_lake).location("silver")
    before = sorted(r["image_id"] for r in spark.read.format("delta").load(location).collect())
    report = maintain.maintain_table(spark, "silver", location, 168)
    assert (report.files_before, report.files_after) == (4, 1)
    # Vacuum keeps what versions younger than 168 h need: the small files stay, beside the new one.
    assert report.stored_before >= 4 and report.stored_after == report.stored_before + 1
    assert sorted(r["image_id"] for r in spark.read.format("delta").load(location).collect()) == before


def test_retention_erases_expired_images_everywhere_and_audits_them(spark, small_lake, tmp_path):
    conf = small_lake.with_overrides(["bronze.retention_days=30"])
    code, out, err = run_maintain(conf, "--tables", "bronze,silver")
    assert code == 0, err
    assert "maintain: retention: erase" in out and "2 image(s) erased" in out
    assert "maintain bronze: 2 -> 1 files" in out and "maintain silver: 2 -> 1 files" in out
    for table in ("bronze", "silver"):
        kept = sorted(r["image_id"] for r in spark.read.format("delta").load(Layout.from_conf(conf).location(table)).collect())
        assert kept == IDS[2:], table
    audit = spark.read.format("delta").load(Layout.from_conf(conf).location("erasures")).collect()
    assert sorted(r["image_id"] for r in audit) == IDS[:2] and {r["reason"] for r in audit} == {"retention"}
    remaining = sorted(p.name for p in (tmp_path / "input").rglob("*.jpg"))
    assert remaining == ["2_100.jpg", "3_100.jpg"]  # expired sources deleted: no run ingests them again


def test_erase_deletes_one_image_from_every_table_vacuums_and_audits(spark, small_lake, tmp_path):
    """The GDPR erasure in make test (the whole chain's scan of every file is tests/operations/test_erase.py,
    make test-long): the image leaves bronze and silver, time travel cannot return it after --vacuum,
    its source file is deleted, and the audit row holds the path's hash, never the path."""
    from delta.tables import DeltaTable

    code, out, err = run_command(
        erase.main, small_lake, "--image-id", IDS[0], "--vacuum", "--delete-source", "--requested-by", "dpo@example"
    )
    assert code == 0, err
    assert "1 image(s) erased" in out
    layout = Layout.from_conf(small_lake)
    for table in ("bronze", "silver"):
        kept = sorted(r["image_id"] for r in spark.read.format("delta").load(layout.location(table)).collect())
        assert kept == IDS[1:], table
    bronze = layout.location("bronze")
    deleted_at = DeltaTable.forPath(spark, bronze).history().where("operation = 'DELETE'").first()["version"]
    with pytest.raises(Exception, match="(?i)not.?found|does not exist|FAILED_READ_FILE"):
        spark.read.format("delta").option("versionAsOf", deleted_at - 1).load(bronze).where(f"image_id = '{IDS[0]}'").collect()
    (audit,) = spark.read.format("delta").load(layout.location("erasures")).collect()
    assert audit["image_id"] == IDS[0] and audit["requested_by"] == "dpo@example" and audit["vacuum"] is True
    assert audit["rows_deleted"] == {"bronze": 1, "silver": 1} and "Training/Apple Red 1/0_100.jpg" not in str(audit.asDict())
    assert not (tmp_path / "input" / "Training" / "Apple Red 1" / "0_100.jpg").exists()


@pytest.mark.parametrize(
    "sets, message",
    [
        (["maintenance.retention_hours.gold=24"], "maintenance.retention_hours.gold is 24: below 168"),
        (["bronze.retention_days=0"], "bronze.retention_days is 0"),
        (["bronze.retention_days=ten"], "bronze.retention_days is 'ten'"),
    ],
)
def test_a_bad_setting_exits_2_before_any_change(make_conf, sets, message):
    code, _, err = run_maintain(make_conf(None, *sets))
    assert code == 2 and message in err and "Traceback" not in err


def test_an_unknown_table_exits_2(make_conf):
    code, _, err = run_maintain(make_conf(), "--tables", "bronze,golden")
    assert code == 2 and "unknown table(s) golden" in err


def test_maintenance_exits_1_while_a_run_holds_the_lake(spark, make_conf):
    conf = make_conf()
    with lock.held(conf, "run", "a-run"):
        code, _, err = run_maintain(conf)
    assert code == 1 and "busy: run run a-run" in err
