"""Gates on real write-audit-publish runs: bad batches are blocked, good ones published, downstream
stages refuse a layer whose last validation failed, and the report command tells which."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines import lake
from pipelines.config import PROJECT_ROOT
from pipelines.layout import Layout
from quality import gates, metrics, outcomes
from tests.quality.conftest import IMAGE_IDS, NOW, bronze_rows, gated_publish, report_output

pytestmark = pytest.mark.spark


def test_good_batches_pass_and_are_published(gated_lake):
    assert gated_lake.bronze_published == {"bronze": 6, "quarantine": 0}
    assert gated_lake.silver_published == {"silver": 5, "quarantine": 1}
    assert gated_lake.gold_published == {"gold": 5, "quarantine": 0}


def test_bad_silver_batch_is_blocked_and_nothing_is_published(gated_lake):
    message = str(gated_lake.silver_failure)

    assert gated_lake.silver_after_failure is None  # no silver table was ever created
    assert "silver quality gate failed for run silver-bad-run" in message
    assert "nothing was published" in message
    assert f"expect_column_values_to_be_unique on image_id: 2 of 5 rows unexpected, e.g. {IMAGE_IDS[0]}" in message
    assert f"features_length (min_value=1280, max_value=1280): 1 of 5 rows unexpected, e.g. {IMAGE_IDS[2]}: 1000" in message
    assert f"features_invalid_values (min_value=0, max_value=0): 1 of 5 rows unexpected, e.g. {IMAGE_IDS[1]}: 1" in message
    assert "unaccounted_bronze_images (min_value=0, max_value=0): observed 2" in message  # 6 bronze, 4 distinct ids
    report = message.split("Report: ")[1].splitlines()[0]
    assert Path(report).is_file() and "/validations/silver_" in report


def test_failed_validation_is_recorded_with_json_results(spark, gated_lake):
    table = spark.read.format("delta").load(Layout.from_conf(gated_lake.conf).location("quality_outcomes"))
    row = table.where(F.col("run_id") == "silver-bad-run").first()

    assert row["layer"] == "silver" and row["success"] is False
    assert row["batch_rows"] == 5 and row["evaluated_expectations"] == 20  # 10 numeric columns, each not null and bounded
    assert len(row["failed_expectations"]) == 4
    assert row["metrics"]["unaccounted_bronze_images"] == 2.0
    results = [json.loads(Path(p).read_text()) for p in row["result_paths"]]
    assert [r["suite_name"] for r in results] == ["silver_rows", "silver_totals"]
    assert all(r["success"] is False for r in results)
    assert Path(row["docs_index"]).is_file()


def test_downstream_stage_refuses_a_layer_whose_last_validation_failed(gated_lake):
    refusal = str(gated_lake.gold_refusal_after_failure)

    assert refusal.startswith("gold refuses to run: the last validation of silver (run silver-bad-run")
    assert "features_length" in refusal and "Report: " in refusal
    assert "python -m pipelines.silver" in refusal


def test_upstream_refusal_lifts_once_the_upstream_gate_passes(spark, gated_lake):
    # Refused while silver's last validation was the failed one...
    assert isinstance(gated_lake.gold_refusal_after_failure, gates.UpstreamNotValidated)
    # ...and not once silver's last validation passed (it would raise UpstreamNotValidated).
    latest = outcomes.latest(spark, gated_lake.conf)["silver"]
    assert (latest.run_id, latest.success) == ("silver-run", True)
    assert gates.require_upstream_passed(spark, gated_lake.conf, "gold") is None
    # Bronze reads no layer: never refused, whatever the other layers' results (gold's last failed).
    assert outcomes.latest(spark, gated_lake.conf)["gold"].success is False
    assert gates.require_upstream_passed(spark, gated_lake.conf, "bronze") is None


def test_gold_batch_missing_the_variance_target_is_blocked(gated_lake):
    message = str(gated_lake.gold_failure)

    assert "gold_totals: expect_column_values_to_be_between on variance_reached (min_value=0.95, max_value=1.0): observed 0.9" in message
    assert gated_lake.gold_versions_after_failure == ["pca-v1"]


def test_report_prints_the_latest_result_of_each_layer(gated_lake):
    during = gated_lake.report_after_failure
    assert "bronze     PASSED         run bronze-run" in during
    assert "6 rows in the batch, 11/11 expectations met" in during
    assert "context: input=test" in during
    assert "silver     FAILED         run silver-bad-run" in during and "16/20 expectations met" in during
    assert "failed: silver_rows: expect_column_values_to_be_between on features_length" in during
    assert "gold       NOT VALIDATED" in during
    assert during.rstrip().endswith("/_reports/quality/gx/data_docs/index.html")

    now = report_output(gated_lake.conf)
    assert "silver     PASSED         run silver-run" in now
    assert "gold       FAILED         run gold-bad-run" in now


def test_bad_bronze_batch_is_blocked(spark, make_conf):
    conf = make_conf()
    rows = bronze_rows(
        spark, IMAGE_IDS[:5], "r",
        overrides={1: {"image_id": IMAGE_IDS[0]}, 2: {"path": "Training/Apple Red 1/0_100.jpg"}, 3: {"size_bytes": 0}, 4: {"label": None}},
    )
    rejected = spark.createDataFrame(
        [("f" * 64, "Training/Apple Red 1/bad.jpg", "bronze", "truncated: test", 3, NOW, "r", NOW)], lake.QUARANTINE_SCHEMA
    )

    with pytest.raises(gates.GateFailed) as failure:
        gated_publish(spark, conf, "bronze", "r", rows, rejected)

    message = str(failure.value)
    for expected in (
        "bronze_rows: expect_column_values_to_be_unique on image_id",
        "bronze_rows: expect_column_values_to_be_unique on path",
        "bronze_rows: expect_column_values_to_be_between on size_bytes",
        "bronze_rows: expect_column_values_to_not_be_null on label",
        "bronze_totals: expect_column_values_to_be_between on batch_quarantine_rate (min_value=0, max_value=0.05): observed 0.166667",
    ):
        assert expected in message
    assert Layout.from_conf(conf).read(spark, "bronze") is None
    assert Layout.from_conf(conf).read(spark, "quarantine") is None


def test_a_layer_never_validated_is_not_refused_and_unknown_layers_are_errors(spark, make_conf):
    conf = make_conf()
    assert outcomes.latest(spark, conf) == {}  # nothing validated in this lake
    assert gates.require_upstream_passed(spark, conf, "silver") is None
    with pytest.raises(ValueError, match="unknown layer 'platinum'"):
        gates.auditor(spark, conf, "platinum", "r")


def test_totals_frame_keeps_counts_integral_and_unknowns_as_missing_floats():
    frame = metrics.totals_frame({"batch_rows": 40, "batch_quarantine_rate": 0.025, "variance_reached": None, "k": 7})
    assert frame.shape == (1, 4)
    assert str(frame["batch_rows"].dtype) == "int64" and frame["batch_rows"][0] == 40
    assert str(frame["k"].dtype) == "int64"
    assert str(frame["batch_quarantine_rate"].dtype) == "float64" and frame["batch_quarantine_rate"][0] == 0.025
    assert str(frame["variance_reached"].dtype) == "float64" and frame["variance_reached"].isna()[0]


def test_a_run_with_nothing_new_is_recorded_but_never_replaces_the_last_validation(spark, make_conf):
    conf = make_conf()
    failed = outcomes.Outcome(
        layer="silver", run_id="silver-failed", success=False, validated_at=NOW, batch_rows=3, evaluated_expectations=5,
        failed_expectations=["silver_rows: broken"], metrics={}, report_path="page.html", result_paths=[], docs_index="index.html",
    )
    outcomes.record(spark, conf, failed)
    audit = gates.auditor(spark, conf, "silver", "silver-nothing-new", {"note": "x"})
    recorded = gates.record_unvalidated(spark, conf, audit)
    assert (recorded.success, recorded.validated, recorded.context) == (True, False, {"note": "x", "validated": "nothing: no new batch"})
    # No report page, no Data Docs: the row names none, so nothing under the reports folder is looked up.
    assert (recorded.report_path, recorded.result_paths, recorded.docs_index) == ("", [], "")
    # The failed batch was not published: gold still refuses, the run with nothing new changes nothing there...
    with pytest.raises(gates.UpstreamNotValidated, match="run silver-failed"):
        gates.require_upstream_passed(spark, conf, "gold")
    assert outcomes.latest(spark, conf, validated=False)["silver"].run_id == "silver-nothing-new"
    # ...and after a passed validation, later runs with nothing new never make gold refuse.
    outcomes.record(spark, conf, dataclasses.replace(failed, run_id="silver-passed", success=True, validated_at=datetime.now(timezone.utc)))
    gates.record_unvalidated(spark, conf, gates.auditor(spark, conf, "silver", "silver-nothing-new-2"))
    assert gates.require_upstream_passed(spark, conf, "gold") is None
    assert outcomes.latest(spark, conf)["silver"].run_id == "silver-passed"


def test_a_chain_appends_its_rows_of_nothing_new_in_one_commit(spark, make_conf):
    conf = make_conf()
    location = Layout.from_conf(conf).location("quality_outcomes")
    passed = outcomes.Outcome(
        layer="bronze", run_id="bronze-passed", success=True, validated_at=NOW, batch_rows=3, evaluated_expectations=5,
        failed_expectations=[], metrics={}, report_path="page.html", result_paths=[], docs_index="index.html",
    )
    outcomes.record(spark, conf, passed)
    assert outcomes.latest(spark, conf)["bronze"].run_id == "bronze-passed"
    with outcomes.held_until_end(spark, conf):
        for layer in ("bronze", "silver"):
            gates.record_unvalidated(spark, conf, gates.auditor(spark, conf, layer, f"{layer}-nothing-new"))
        assert lake.latest_commit(spark, location)[0] == 0  # held, not appended
        # A validation inside the block is appended at once: the next stage's upstream check reads it.
        outcomes.record(spark, conf, dataclasses.replace(passed, layer="gold", run_id="gold-failed", success=False))
        assert lake.latest_commit(spark, location)[0] == 1
        with pytest.raises(gates.UpstreamNotValidated, match="run gold-failed"):
            gates.require_upstream_passed(spark, conf, "classifier")
    assert lake.latest_commit(spark, location)[0] == 2  # both held rows, one commit
    last_runs = outcomes.latest(spark, conf, validated=False)
    assert {layer: last_runs[layer].run_id for layer in ("bronze", "silver")} == {
        "bronze": "bronze-nothing-new", "silver": "silver-nothing-new",
    }
    # A commit made by another process is seen by the next read (latest() remembers per commit).
    spark.createDataFrame([dataclasses.replace(passed, run_id="bronze-elsewhere", validated_at=datetime.now(timezone.utc)).as_row()],
                          outcomes.OUTCOME_SCHEMA).write.format("delta").mode("append").save(location)
    assert outcomes.latest(spark, conf)["bronze"].run_id == "bronze-elsewhere"


def test_a_new_process_takes_the_latest_outcomes_from_the_answers_file_until_another_process_commits(spark, make_conf, monkeypatch):
    """The answers of the last read, kept up to date by this process's appends, are in a file with
    the commit they hold: a process that remembers nothing (the in-memory answers cleared) reads
    the file, not the table, while the table's latest commit is that one; a commit by another
    process (a direct append) makes it read the table."""
    conf = make_conf()
    location = Layout.from_conf(conf).location("quality_outcomes")
    passed = outcomes.Outcome(
        layer="bronze", run_id="bronze-passed", success=True, validated_at=NOW, batch_rows=3, evaluated_expectations=5,
        failed_expectations=["one"], metrics={"batch_rows": 3.0}, report_path="page.html", result_paths=["r.json"],
        docs_index="index.html", context={"input": "in"},
    )
    outcomes.record(spark, conf, passed)
    read_from_table = outcomes.latest_runs(spark, conf)  # the table read; the answers file written
    outcomes.record(spark, conf, dataclasses.replace(passed, layer="silver", run_id="silver-failed", success=False))
    outcomes.record(spark, conf, dataclasses.replace(passed, layer="silver", run_id="silver-nothing", evaluated_expectations=0))

    reads = []
    read_table = lake.read_table
    monkeypatch.setattr(lake, "read_table", lambda spark, location: reads.append(location) or read_table(spark, location))
    monkeypatch.setattr(outcomes, "_latest_read", {})  # a new process
    validations, last_runs = outcomes.latest_runs(spark, conf)
    assert reads == []
    assert validations["bronze"] == read_from_table[0]["bronze"]
    assert (validations["silver"].run_id, last_runs["silver"].run_id) == ("silver-failed", "silver-nothing")
    monkeypatch.setattr(outcomes, "_latest_read", {})
    assert outcomes.latest_runs(spark, conf) == (validations, last_runs) and reads == []
    with pytest.raises(gates.UpstreamNotValidated, match="run silver-failed"):
        gates.require_upstream_passed(spark, conf, "gold")

    spark.createDataFrame([dataclasses.replace(passed, run_id="bronze-elsewhere", validated_at=datetime.now(timezone.utc)).as_row()],
                          outcomes.OUTCOME_SCHEMA).write.format("delta").mode("append").save(location)
    assert outcomes.latest(spark, conf)["bronze"].run_id == "bronze-elsewhere" and reads == [location]
    monkeypatch.setattr(outcomes, "_latest_read", {})
    table_answers = read_table(spark, location)
    assert outcomes.latest(spark, conf)["bronze"].run_id == "bronze-elsewhere" and reads == [location]  # the file again
    assert table_answers.count() == 4

    # Answers of an older state are never brought forward by an append: the table is read again.
    stale = outcomes._latest_read[location]
    spark.createDataFrame([dataclasses.replace(passed, run_id="bronze-foreign", validated_at=datetime.now(timezone.utc)).as_row()],
                          outcomes.OUTCOME_SCHEMA).write.format("delta").mode("append").save(location)
    monkeypatch.setattr(outcomes, "_latest_read", {location: stale})
    outcomes.record(spark, conf, dataclasses.replace(passed, layer="gold", run_id="gold-passed", validated_at=datetime.now(timezone.utc)))
    assert outcomes.latest(spark, conf)["bronze"].run_id == "bronze-foreign" and reads == [location, location]
    # The file names its table: another outcome table (quality.outcomes_table changed) does not use it.
    moved = make_conf(None, "quality.outcomes_table=outcomes-moved")
    assert outcomes._read_answers_file(spark, Layout.from_conf(conf)) is not None
    assert outcomes._read_answers_file(spark, Layout.from_conf(moved)) is None


def test_preload_imports_great_expectations_in_the_background_once():
    """A stage with something new starts the audit's Great Expectations import at once, in a
    thread (gates.preload), while it reads its tables; a fresh interpreter shows the import done."""
    code = (
        "import sys; from quality import gates; assert 'great_expectations' not in sys.modules; "
        "gates.preload(); first = gates._preloading; gates.preload(); assert gates._preloading is first; "
        "first.join(120); assert 'great_expectations' in sys.modules and 'quality.suites' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
