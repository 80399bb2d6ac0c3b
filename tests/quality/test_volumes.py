"""Data Docs volumes (quality/gx_runner.py): a GX project takes the gates of at most
quality.docs_volume_runs runs per suite, then the next gate opens the next volume, so a gate's
Data Docs build stays the same size however many runs the lake has seen; nothing already written
moves. The S3 side: tests/quality/test_gates_s3.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipelines.config import ConfError, load_conf
from pipelines.layout import Layout
from quality import gates, gx_runner, outcomes
from quality.outcomes import Outcome
from tests.quality.conftest import IMAGE_IDS, bronze_rows, gated_publish, report_output


def held(reports: Path, suite: str, runs: int, volume: str = "") -> None:
    """`runs` run folders of `suite` in the volume's validations store, as GX writes them."""
    for n in range(runs):
        (reports / volume / "gx" / "uncommitted" / "validations" / suite / f"run-{n}" / "time").mkdir(parents=True, exist_ok=True)


def built(reports: Path, volume: str) -> None:
    """The volume's Data Docs index, as its first gate's build leaves it."""
    index = Path(gx_runner.index_page(str(reports / volume)))
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text("<html></html>")


def test_the_newest_volume_is_the_highest_number_whose_index_exists(tmp_path):
    reports = tmp_path / "quality"
    assert gx_runner.newest_volume(None, str(reports)) == str(reports)  # nothing yet: volume 1 is where it always was
    for name in ("volume-2", "volume-10", "volume-x"):
        built(reports, name)
    (reports / "volume-11" / "gx").mkdir(parents=True)  # its first gate still running, or failed before its build
    (reports / "volume-12").write_text("a file, not a volume")

    assert gx_runner.newest_volume(None, str(reports)) == f"{reports}/volume-10"
    assert gx_runner.index_page(f"{reports}/volume-2") == f"{reports}/volume-2/gx/data_docs/index.html"


def test_runs_held_counts_the_fullest_of_the_gates_suites(tmp_path):
    held(tmp_path, "bronze_rows", 3)
    held(tmp_path, "bronze_totals", 2)
    held(tmp_path, "silver_rows", 9)

    assert gx_runner.runs_held(tmp_path, ["bronze_rows", "bronze_totals"]) == 3
    assert gx_runner.runs_held(tmp_path, ["gold_rows"]) == 0


def test_a_gate_writes_to_the_newest_volume_until_it_is_full(tmp_path):
    reports = tmp_path / "quality"
    suites = ["bronze_rows", "bronze_totals"]
    held(reports, "bronze_rows", 2)
    with gx_runner.workspace(None, str(reports), 0.0, suites, volume_runs=3) as (root, to_lake):
        assert root == reports and to_lake(str(root / "x.html")) == str(reports / "x.html")

    held(reports, "bronze_rows", 3)  # full: the next gate opens volume 2
    with gx_runner.workspace(None, str(reports), 0.0, suites, volume_runs=3) as (root, _):
        assert root == reports / "volume-2" and root.is_dir()
    held(reports, "silver_rows", 1, "volume-2")
    built(reports, "volume-2")
    with gx_runner.workspace(None, str(reports), 0.0, ["silver_rows"], volume_runs=3) as (root, _):
        assert root == reports / "volume-2"  # another stage's gate joins the newest volume
    assert (reports / "gx" / "uncommitted" / "validations" / "bronze_rows" / "run-0").is_dir()  # volume 1 untouched


def test_a_volume_of_no_runs_is_refused_before_the_stage_runs():
    conf = load_conf(["conf/local.yaml"], ["quality.docs_volume_runs=0"])
    with pytest.raises(ConfError, match="quality.docs_volume_runs is 0: set 1 or more"):
        gates.auditor(None, conf, "bronze", "run")


@pytest.mark.spark
def test_a_gate_finding_its_volume_full_reports_in_the_next_one(spark, tmp_path):
    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}", "quality.docs_volume_runs=1"])
    reports = Path(Layout.from_conf(conf).quality_reports)
    gated_publish(spark, conf, "bronze", "first", bronze_rows(spark, IMAGE_IDS[:2], "first"))
    gated_publish(spark, conf, "bronze", "second", bronze_rows(spark, IMAGE_IDS[2:4], "second"))

    rows = {r["run_id"]: r for r in spark.read.format("delta").load(Layout.from_conf(conf).location("quality_outcomes")).collect()}
    volume_2 = reports / "volume-2" / "gx"
    assert rows["first"]["docs_index"] == str(reports / "gx" / "data_docs" / "index.html")
    assert rows["second"]["docs_index"] == str(volume_2 / "data_docs" / "index.html")
    assert rows["second"]["report_path"].startswith(str(volume_2 / "data_docs" / "validations" / "bronze_rows" / "second"))
    assert all(p.startswith(str(volume_2)) for p in rows["second"]["result_paths"])
    for row in rows.values():  # every page and result where its outcome row says, the first volume's too
        assert all(Path(p).is_file() for p in [row["docs_index"], row["report_path"], *row["result_paths"]])
    assert "second" in Path(rows["second"]["docs_index"]).read_text() and "first" not in Path(rows["second"]["docs_index"]).read_text()
    assert gates.docs_index_location(spark, conf) == rows["second"]["docs_index"]
    last = outcomes.latest(spark, conf)["bronze"]
    assert (last.run_id, last.docs_index) == ("second", rows["second"]["docs_index"])

    report = report_output(conf)  # the last validation is in the newest volume: no per-layer index line
    assert f"Data Docs: {rows['second']['docs_index']}" in report and "in the Data Docs of" not in report


def test_the_next_volume_follows_the_highest_number_not_the_count(tmp_path):
    reports = tmp_path / "quality"
    held(reports, "bronze_rows", 1, "volume-7")  # volumes 2 to 6 removed by hand, say
    built(reports, "volume-7")
    with gx_runner.workspace(None, str(reports), 0.0, ["bronze_rows"], volume_runs=1) as (root, _):
        assert root == reports / "volume-8"
    assert gx_runner.next_volume(str(reports), str(reports)) == f"{reports}/volume-2"


def test_the_report_names_the_volume_of_a_validation_made_before_the_newest():
    from quality import report

    older = Outcome(
        layer="silver", run_id="silver-run", success=True, validated_at=datetime(2026, 12, 4, 5, 0), batch_rows=5,
        evaluated_expectations=20, failed_expectations=[], metrics={}, report_path="/r/gx/data_docs/validations/x.html",
        result_paths=[], docs_index="/r/gx/data_docs/index.html", context={},
    )
    text = report.format_report({"silver": older}, "/r/volume-2/gx/data_docs/index.html", "/lake")

    assert "in the Data Docs of /r/gx/data_docs/index.html" in text
    assert text.endswith("Data Docs: /r/volume-2/gx/data_docs/index.html")
