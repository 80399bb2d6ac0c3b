"""`python -m bench.data_docs` end to end on tiny histories (GX only, no Spark): the table and the
results file it writes; no timing is checked."""

from __future__ import annotations

import json

from bench import data_docs
from pipelines import stages
from pipelines.config import load_conf


def test_times_a_gate_at_each_history_and_writes_the_results(tmp_path, capsys):
    assert data_docs.main(["--runs", "3,1", "--set", f"bench.results_dir={tmp_path}"]) == 0

    [results] = tmp_path.glob("data-docs-*.json")
    document = json.loads(results.read_text())
    assert [row["runs_held"] for row in document["runs"]] == [1, 3]
    assert all(row["gate_gx_seconds"] > 0 for row in document["runs"])
    assert document["docs_volume_runs"] == 50 and document["layer"] == "bronze"
    assert "| runs held per suite | bronze gate, GX side (s) |" in capsys.readouterr().out


def test_every_layers_suites_hold_the_runs(tmp_path, monkeypatch):
    """A real volume holds every layer's suites: the timed gate's index lists all of them."""
    seen, remove = [], data_docs.shutil.rmtree

    def count_then_remove(path, ignore_errors=False):
        seen.append(sorted((p.name, sum(1 for _ in p.iterdir())) for p in data_docs._stores(path)[0].iterdir() if p.is_dir()))
        remove(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(data_docs.shutil, "rmtree", count_then_remove)
    data_docs.timed_gates(load_conf(["conf/local.yaml"]), [2])

    [suites] = seen
    assert suites == [(f"{layer}_{kind}", 2) for layer in sorted(stages.names()) for kind in ("rows", "totals")]


def test_a_bad_history_list_is_one_line_and_exit_2(capsys):
    assert data_docs.main(["--runs", "10,x"]) == 2
    assert data_docs.main(["--runs", "0,5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "bench.data_docs: --runs '10,x': give whole numbers separated by commas",
        "bench.data_docs: --runs '0,5': every number must be 1 or more",
    ]
