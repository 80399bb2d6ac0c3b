"""`python -m bench.data_docs` end to end on tiny histories (GX only, no Spark): the table and the
results file it writes; no timing is checked."""

from __future__ import annotations

import json

from bench import data_docs


def test_times_a_gate_at_each_history_and_writes_the_results(tmp_path, capsys):
    assert data_docs.main(["--runs", "3,1", "--set", f"bench.results_dir={tmp_path}"]) == 0

    [results] = tmp_path.glob("data-docs-*.json")
    document = json.loads(results.read_text())
    assert [row["runs_held"] for row in document["runs"]] == [1, 3]
    assert all(row["gate_gx_seconds"] > 0 for row in document["runs"])
    assert document["docs_volume_runs"] == 100 and document["layer"] == "bronze"
    assert "| runs held per suite | bronze gate, GX side (s) |" in capsys.readouterr().out


def test_a_bad_history_list_is_one_line_and_exit_2(capsys):
    assert data_docs.main(["--runs", "10,x"]) == 2
    assert data_docs.main(["--runs", "0,5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "bench.data_docs: --runs '10,x': give whole numbers separated by commas",
        "bench.data_docs: --runs '0,5': every number must be 1 or more",
    ]
