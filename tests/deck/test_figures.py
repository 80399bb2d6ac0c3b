"""One source for the figures the deck and the docs quote (docs/deck/figures.yaml, scripts/deck_figures.py).

The cost part is recomputed from deploy.cost and the conf, so a change of prices or settings
without `make deck-figures` fails here; the docs that quote a shared figure (the per-stage fixed
cost, the cost tables and break-evens, k and the variance reached, the throughput, EMR Serverless
worker memory) must quote the file's value.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from pipelines.config import PROJECT_ROOT
from tests.conftest import load_script

FIGURES = yaml.safe_load((PROJECT_ROOT / "docs" / "deck" / "figures.yaml").read_text(encoding="utf-8"))
DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def text(path) -> str:
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def sentences_with(pattern: str):
    """(document, sentence) for every sentence of the docs matching `pattern` (case-insensitive)."""
    for doc in DOCS:
        for sentence in re.split(r"(?<=[.;:!?|])\s", text(doc)):
            if re.search(pattern, sentence, re.IGNORECASE):
                yield doc.name, sentence


def test_the_cost_figures_are_what_deploy_cost_computes_now(monkeypatch):
    monkeypatch.setenv("FRUITS_BUCKET", "figures-test-bucket")
    recomputed = load_script("deck_figures").cost_figures()
    assert yaml.safe_load(yaml.safe_dump(recomputed)) == FIGURES["cost"], (
        "docs/deck/figures.yaml is stale: run `make deck-figures` (or scripts/deck_figures.py --cost-only)"
    )


def test_every_fixed_cost_range_in_the_docs_is_the_measured_one():
    fixed = FIGURES["measured"]["stage_fixed_cost"]
    expected = (fixed["low_s"], fixed["high_s"])
    found = [(doc, tuple(map(int, m)), s) for doc, s in sentences_with(r"fixed cost")
             for m in re.findall(r"(\d+) (?:to|-) (\d+) s\b", s)]
    assert found, "no fixed-cost range found in the docs: the check would prove nothing"
    wrong = [(doc, got, s[:160]) for doc, got, s in found if got != expected]
    assert not wrong, f"fixed cost per stage is {expected[0]} to {expected[1]} s (figures.yaml): {wrong}"


def test_the_fixed_cost_range_is_that_of_the_bench_files_given(tmp_path):
    def bench_file(name, stages):
        path = tmp_path / name
        path.write_text(json.dumps({"measurements": {"chain_incremental": {"stages": stages}}}), encoding="utf-8")
        return path

    files = [bench_file("a.json", {"bronze": 18.9, "silver": 6.9, "gold": 10.1}), bench_file("b.json", {"bronze": 21.2})]
    fixed = load_script("deck_figures").fixed_cost_from_bench(files)
    assert (fixed["low_s"], fixed["high_s"], fixed["observed_s"]) == (5, 25, [6.9, 21.2])
    assert fixed["source"] == "chain_incremental per-stage seconds of a.json; chain_incremental per-stage seconds of b.json"


def test_no_doc_says_every_serverless_worker_has_2_to_8_gb_per_vcpu():
    wrong = [(doc, s[:160]) for doc, s in sentences_with(r"2(?:-| to )8 GB per vCPU")
             if not re.search(r"1 (?:and|or) 2 vCPU|1- (?:and|or) 2-vCPU|1-vCPU|up to 2 vCPU", s)]
    assert not wrong, f"2-8 GB per vCPU holds for 1- and 2-vCPU workers only (4 vCPU: 8-30 GB): {wrong}"


def cost_cells() -> set[str]:
    cells = set()
    for scenario in FIGURES["cost"].values():
        for row in scenario["rows"].values():
            for line in row.values():
                cells.add(f"${line['usd']:,.2f} ({line['minutes']:,} min)")
    return cells


@pytest.mark.parametrize("doc", ["cost.md", "review.md"])
def test_the_cost_tables_of_the_docs_are_the_figures(doc):
    quoted = re.findall(r"\$\d[\d,]*\.\d\d \([\d,]+ min\)", text(PROJECT_ROOT / "docs" / doc))
    assert quoted, f"no cost cell in docs/{doc}"
    stale = sorted(set(quoted) - cost_cells())
    assert not stale, f"docs/{doc} quotes costs deploy cost no longer computes: {stale} (see docs/deck/figures.yaml)"


def test_the_break_evens_quoted_are_the_figures():
    points = {p for s in FIGURES["cost"].values() for p in s["break_even_vs_serverless"].values()}
    allowed = points | {round(p, -3) for p in points}
    quoted = [(doc.name, int(n.replace(",", ""))) for doc in DOCS for m in re.finditer(r"break-even", text(doc), re.I)
              for n in re.findall(r"(?:about|at|to) \*{0,2}(\d{1,3}(?:,\d{3})+) images", text(doc)[m.start():m.start() + 250])]
    assert quoted
    wrong = [(doc, n) for doc, n in quoted if n not in allowed]
    assert not wrong, f"break-even points not in docs/deck/figures.yaml {sorted(points)}: {wrong}"


def test_k_and_the_variance_reached_are_the_runs():
    gold = FIGURES["run"]["gold"]
    ks = [(doc, int(k)) for doc, s in sentences_with(r"k = \d+ of 1,?280") for k in re.findall(r"k = (\d+) of 1,?280", s)]
    assert ks and all(k == gold["k"] for _, k in ks), f"k of the sample's fit is {gold['k']}: {ks}"
    for doc, s in sentences_with(r"variance 0\.9\d\d\d|0\.9\d\d\d of the variance"):
        assert f"{gold['variance_reached']:.4f}" in s, (doc, s[:160])


def test_the_throughput_of_the_cost_docs_is_the_conf_one():
    rates = {s["images_per_s_per_vcpu"] for s in FIGURES["cost"].values()}
    for doc in ("cost.md", "review.md"):
        for rate in re.findall(r"\*?\*?(\d+(?:\.\d+)?)\*?\*? images/s per vCPU", text(PROJECT_ROOT / "docs" / doc)):
            assert float(rate) in rates, f"docs/{doc} quotes {rate} images/s per vCPU; the figures use {sorted(rates)}"


def test_the_committed_plots_are_those_of_the_figures_run():
    plots = PROJECT_ROOT / "docs" / "deck" / "plots"
    names = {"cumulative_variance.png", "pc1_pc2_scatter.png", "confusion_matrix.png"}
    assert names <= {p.name for p in plots.iterdir()}
    # The PNGs carry no run id; the figures name the run they and the plots came from.
    assert FIGURES["run"]["gold"]["run_id"] and FIGURES["run"]["classifier"]["run_id"]
