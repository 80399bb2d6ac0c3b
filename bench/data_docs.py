"""What a gate's Data Docs cost as the runs in its GX project accumulate (and what volumes cap).

    python -m bench.data_docs [--conf FILE] [--set KEY=VALUE] [--runs 1,50,100,1000]

GX's Data Docs index lists every validation result its project holds, parsing each one's run
time, at every build: a project that kept every run would make each gate dearer as the lake ages.
This times the GX side of bronze's gate (quality/gx_runner.run_checkpoints: its two checkpoints
on a 60-row pandas frame, then the one Data Docs build; no Spark) in a temporary project that
holds H runs of every declared layer's suites once the gate is done (the earlier runs are copies
of one real run's results and pages), for each H of --runs. A gate never leaves a volume holding
more than quality.docs_volume_runs runs (conf; a gate finding it full opens the next volume): the
row at that H is the most a gate pays. Prints a Markdown table and writes
<bench.results_dir>/data-docs-<stamp>.json. `make bench` runs the same timing with 1, a volume's
and ten volumes' runs (bench.measure's data_docs, ratios in bench/summary.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.machine import describe_machine
from pipelines import stages
from pipelines.config import Conf
from pipelines.options import load_stage_conf, stage_parser
from pipelines.stages import ROW_ID

LAYER = "bronze"
ROWS = 60  # the bench's increment at N = 1,200


def checks(conf: Conf) -> list:
    """Bronze's two suites with the frames a passing 60-row batch gives them."""
    from quality import suites
    from quality.metrics import totals_frame

    rows = pd.DataFrame({
        ROW_ID: [f"{n:064x}" for n in range(ROWS)],
        "path": [f"Training/Apple/{n}_100.jpg" for n in range(ROWS)],
        "label": ["Apple"] * ROWS,
        "size_bytes": [4096] * ROWS,
    })
    totals = {"batch_rows": ROWS, "batch_quarantined": 0, "batch_quarantined_known": 0, "batch_quarantine_rate": 0.0,
              "rows_after_publish": 1200 + ROWS}
    return [
        (suites.rows_suite(LAYER, conf), rows, [ROW_ID]),
        (suites.totals_suite(LAYER, conf, None, []), totals_frame(totals), []),
    ]


def _stores(project: Path) -> tuple[Path, Path]:
    """The project's validation results store and its site's validation pages."""
    from quality.gx_runner import GX_DIR, SITE_DIR, validations_store

    return validations_store(project), project / GX_DIR / SITE_DIR / "validations"


def hold(project: Path, template: Path, runs: int) -> None:
    """Make every suite of every declared layer hold `runs` runs in the project once bronze's timed
    gate is done (bronze's suites one less before it): copies of the template run's results and
    pages (a real volume holds every layer's suites, not only bronze's)."""
    for store, kept in zip(_stores(project), _stores(template)):
        for layer in stages.names():
            for kind in ("rows", "totals"):
                suite = store / f"{layer}_{kind}"
                suite.mkdir(parents=True, exist_ok=True)
                for n in range(sum(1 for _ in suite.iterdir()), runs - 1 if layer == LAYER else runs):
                    shutil.copytree(kept / f"{LAYER}_{kind}" / "seed", suite / f"copy-{n:05d}")


def timed_gates(conf: Conf, held: list[int], progress: bool = False) -> list[dict]:
    """The GX side of bronze's gate, timed once for each number of runs of `held` (ascending): the
    project holds that many runs of each suite once the timed gate is done. A temporary project,
    removed at the end."""
    from quality import gx_runner

    project = Path(tempfile.mkdtemp(prefix="fruits-data-docs-"))
    template = project / "template"
    rows = []
    try:
        frames = checks(conf)
        gx_runner.run_checkpoints(project, conf, "seed", datetime.now(timezone.utc), frames)  # GX imported, project made
        for store, kept in zip(_stores(project), _stores(template)):  # the seed run leaves the project
            for suite in (p for p in store.iterdir() if p.is_dir()):
                (kept / suite.name).mkdir(parents=True)
                shutil.move(suite / "seed", kept / suite.name / "seed")
        for n, runs in enumerate(held):
            hold(project, template, runs)
            started = time.perf_counter()
            gx_runner.run_checkpoints(project, conf, f"timed-{n}", datetime.now(timezone.utc), frames)
            rows.append({"runs_held": runs, "gate_gx_seconds": round(time.perf_counter() - started, 3)})
            if progress:
                print(f"  {runs} run(s) of each suite held: {rows[-1]['gate_gx_seconds']} s", flush=True)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1,50,100,1000", help="runs held per suite, comma list (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        held = sorted({int(n) for n in args.runs.split(",")})
    except ValueError:
        print(f"bench.data_docs: --runs {args.runs!r}: give whole numbers separated by commas", file=sys.stderr)
        return 2
    if held[0] < 1:
        print(f"bench.data_docs: --runs {args.runs!r}: every number must be 1 or more", file=sys.stderr)
        return 2
    conf = load_stage_conf(args)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    rows = timed_gates(conf, held, progress=True)
    volume = conf["quality.docs_volume_runs"]
    print("\n| runs held per suite | bronze gate, GX side (s) |\n|---:|---:|")
    for row in rows:
        print(f"| {row['runs_held']:,}{' (quality.docs_volume_runs)' if row['runs_held'] == volume else ''} | {row['gate_gx_seconds']:.2f} |")
    results = Path(conf.path("bench.results_dir")) / f"data-docs-{stamp}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    document = {"kind": "data_docs", "started": stamp, "machine": describe_machine(), "layer": LAYER, "batch_rows": ROWS,
                "docs_volume_runs": volume, "runs": rows}
    results.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
