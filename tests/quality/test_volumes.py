"""Data Docs volumes (quality/gx_runner.py): a GX project takes the gates of at most
quality.docs_volume_runs runs per suite, then the next gate opens the next volume, so a gate's
Data Docs build stays the same size however many runs the lake has seen; nothing already written
moves. The S3 side: tests/quality/test_gates_s3.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import ConfError, load_conf
from quality import gates, gx_runner


def held(reports: Path, suite: str, runs: int, volume: str = "") -> None:
    """`runs` run folders of `suite` in the volume's validations store, as GX writes them."""
    for n in range(runs):
        (reports / volume / "gx" / "uncommitted" / "validations" / suite / f"run-{n}" / "time").mkdir(parents=True, exist_ok=True)


def test_volume_one_is_the_reports_folder_and_later_ones_are_numbered(tmp_path):
    reports = tmp_path / "quality"
    assert gx_runner.volumes(None, str(reports)) == [str(reports)]  # nothing yet: volume 1 is where it always was
    for name in ("volume-10", "volume-2", "volume-x", "gx"):
        (reports / name).mkdir(parents=True)
    (reports / "volume-3").write_text("a file, not a volume")

    assert gx_runner.volumes(None, str(reports)) == [str(reports), f"{reports}/volume-2", f"{reports}/volume-10"]
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
    with gx_runner.workspace(None, str(reports), 0.0, ["silver_rows"], volume_runs=3) as (root, _):
        assert root == reports / "volume-2"  # another stage's gate joins the newest volume
    assert (reports / "gx" / "uncommitted" / "validations" / "bronze_rows" / "run-0").is_dir()  # volume 1 untouched


def test_a_volume_of_no_runs_is_refused_before_the_stage_runs():
    conf = load_conf(["conf/local.yaml"], ["quality.docs_volume_runs=0"])
    with pytest.raises(ConfError, match="quality.docs_volume_runs is 0: set it to 1 or more"):
        gates.auditor(None, conf, "bronze", "run")


def test_the_next_volume_follows_the_highest_number_not_the_count(tmp_path):
    reports = tmp_path / "quality"
    held(reports, "bronze_rows", 1, "volume-7")  # volumes 2 to 6 removed by hand, say
    with gx_runner.workspace(None, str(reports), 0.0, ["bronze_rows"], volume_runs=1) as (root, _):
        assert root == reports / "volume-8"
    assert gx_runner.next_volume(str(reports), str(reports)) == f"{reports}/volume-2"
