"""kill -9 in the middle of a stage's write, then a rerun: the lake ends exactly as after a clean run.

Each test starts the stage as `python -m pipelines.<stage>` with a known run id, waits until the
run is inside its write-audit-publish (a file the protocol writes at a known point appears), then
SIGKILLs the whole process tree (the Python driver, the JVM, the PySpark daemon and workers). A
rerun with a new run id (what a scheduler does) must then leave every table equal to the clean
reference lake's: the same image_ids, no duplicate, nothing missing, the same features and scores.

Kill points (the trigger file, and what the kill leaves):
- silver and gold, "staged": the run's private staging table commits its version 0
  (`_staging/<stage>/<stage>/<run_id>/_delta_log/00000000000000000000.json` appears): the batch is
  computed (silver's inference is done) and written, nothing is published yet;
- bronze, "between publishes": the run is started with the fault point of lake.write_audit_publish
  (FRUITS_FAULT_AFTER_PUBLISH=quarantine): it stops itself (SIGSTOP) right after the quarantine
  table's commit, before bronze's, and is killed there: the two tables of one run are two Delta
  commits, and the rerun must complete the second without redoing the first. (The staged point is
  the same protocol code for every stage, covered by silver and gold.)
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from pipelines import gold, lake
from pipelines.layout import Layout
from tests.reliability.conftest import (
    assert_bronze_equal,
    assert_gold_equal,
    assert_silver_equal,
    bronze_rows,
    copy_tables,
    delta_version_file,
    process_state,
    quarantine_rows,
    run_main_in_process,
)

pytestmark = [pytest.mark.spark]


def stopped(pid: int) -> bool:
    """True once the process is stopped (state T: the fault point's SIGSTOP)."""
    return process_state(pid) == psutil.STATUS_STOPPED


def kill_when_staged_then_rerun(stage: str, scenario, stage_processes, log_dir) -> None:
    """Run `stage` in its own process, kill -9 its tree as soon as its staging table commits (the
    batch computed, nothing published yet), check nothing was published, then rerun it here."""
    process = stage_processes(stage, scenario.args(f"kill-{stage}"), log_dir, f"kill-{stage}")
    staged = delta_version_file(scenario.staging_table(stage, stage, f"kill-{stage}"), 0)
    process.wait_for(staged.exists, f"{stage}'s staged batch")
    assert len(process.kill_tree()) >= 2, "expected the stage and its JVM in the killed tree"
    assert not scenario.table_dir(stage).exists(), f"the killed run published {stage} rows"
    assert run_main_in_process(stage, scenario.args(f"rerun-{stage}")) == 0, "the rerun after the kill failed"


@pytest.mark.slow
def test_bronze_killed_between_its_two_publishes_then_rerun_equals_clean_run(
    spark, reference, tmp_path, stage_processes, monkeypatch
):
    scenario = reference.conf.elsewhere(tmp_path / "lake")

    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "quarantine")  # only the stage process gets it
    process = stage_processes("bronze", scenario.args("kill-bronze"), tmp_path / "logs", "kill-bronze")
    monkeypatch.delenv(lake.FAULT_AFTER_PUBLISH_ENV)
    process.wait_for(lambda: stopped(process.process.pid), "the stop after the quarantine table's publish")
    assert delta_version_file(scenario.table_dir("quarantine"), 1).exists(), "quarantine's MERGE is not committed"
    assert not scenario.table_dir("bronze").exists(), "bronze was published before the fault point"
    assert len(process.kill_tree()) >= 2, "expected the stage and its JVM in the killed tree"

    assert bronze_rows(spark, scenario.conf) == []
    assert quarantine_rows(spark, scenario.conf, "bronze") == quarantine_rows(spark, reference.conf.conf, "bronze")
    assert run_main_in_process("bronze", scenario.args("rerun-bronze")) == 0, "the rerun after the kill failed"
    assert_bronze_equal(spark, scenario.conf, reference.conf.conf)


@pytest.mark.slow
@pytest.mark.long  # a stage process killed and rerun: ~1 min; bronze's kill stays in make test
def test_silver_killed_mid_write_then_rerun_equals_clean_run(spark, reference, tmp_path, stage_processes):
    scenario = reference.conf.elsewhere(tmp_path / "lake")
    copy_tables(reference.conf, scenario, ["bronze", "quarantine"])
    assert quarantine_rows(spark, scenario.conf, "silver") == [], "the reference quarantine must hold bronze rows only"

    kill_when_staged_then_rerun("silver", scenario, stage_processes, tmp_path / "logs")
    assert_silver_equal(spark, scenario.conf, reference.conf.conf)
    assert_bronze_equal(spark, scenario.conf, reference.conf.conf)


@pytest.mark.slow
@pytest.mark.long  # a stage process killed and rerun: ~1 min; bronze's kill stays in make test
def test_gold_killed_mid_write_then_rerun_equals_clean_run(spark, reference, tmp_path, stage_processes):
    scenario = reference.conf.elsewhere(tmp_path / "lake")
    copy_tables(reference.conf, scenario, ["bronze", "quarantine", "silver"])

    kill_when_staged_then_rerun("gold", scenario, stage_processes, tmp_path / "logs")
    assert_gold_equal(spark, scenario.conf, reference.conf.conf)
    # The model of the published gold rows is registered (the killed fit's model is an orphan at worst).
    version = spark.read.format("delta").load(str(scenario.table_dir("gold"))).select("model_version").first()[0]
    registry = spark.read.format("delta").load(Layout.from_conf(scenario.conf).location("pca_registry"))
    assert registry.where(registry.model_version == version).count() == 1


@pytest.mark.slow
def test_clean_runs_leave_no_staging_tables(reference):
    """write-audit-publish drops a run's private staging tables once they are published."""
    staging = Path(Layout.from_conf(reference.conf.conf).staging_root)
    leftovers = sorted(str(p.relative_to(staging)) for p in staging.glob("*/*/*") if p.is_dir()) if staging.exists() else []
    assert leftovers == [], f"staging tables left behind by the clean runs: {leftovers}"
