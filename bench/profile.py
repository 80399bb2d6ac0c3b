"""Where a chain run's seconds go: with nothing new, after an increment, and the increment of a running application.

    python -m bench.profile [--conf FILE] [--set KEY=VALUE] [--images N]      (make profile)

Builds a lake of N images (conf bench.images; the bench's own images, seed and increment) with one
`python -m pipelines.run` (one application, not profiled) of the image layers bronze, silver and
gold, the chain `make bench` times (the classifier's accuracy bar is for the whole sample, not for
N images), then runs that same command twice more under py-spy: with nothing new, and after adding
the increment. py-spy samples the process from outside, so the profiled code runs at full speed
(cProfile slows the Python-heavy parts, Great Expectations first, and would skew the shares).
Last, the watch mode's case (bench.measure chain_warm, as `make bench`'s measurement 6b): two more
increments of that size, the chain running after each in one new process, the second sampled from
inside the process (bench/stack_sampler.py): its column is that run alone, without the session
start. Each sample of the main thread counts once, in the first part of PARTS whose function is on
its stack, and in the stage whose module's `main` or `run` is on it. Prints the two Markdown tables
docs/benchmarks.md quotes (parts, stages), each column's seconds over the full run's (not
profiled, same command) and writes them to <bench.results_dir>/profile-<stamp>.json. Timings on a
busy machine are noisy: run it on a quiet one, and compare two commits by running it at each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench import dataset
from bench.machine import describe_machine
from bench.run import prepare_weights, source_folder
from bench.stack_sampler import SAMPLE_RATE
from pipelines import features, stages
from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import ConfError

# (part, functions as "<function> (<file>:"): a sample goes to the first part found on its stack.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JVM and Spark session start", ("build_spark_session (pipelines/session.py:",)),
    ("Great Expectations import", ("<module> (quality/suites.py:",)),
    ("gate: GX checkpoint and Data Docs", ("run_checkpoints (quality/gx_runner.py:", "row_frame (quality/metrics.py:")),
    ("gate: totals and model facts (Spark)", ("totals (quality/metrics.py:", "model_facts (pipelines/stages.py:")),
    ("gate outcome rows (Delta append)", ("record (quality/outcomes.py:", "held_until_end (quality/outcomes.py:")),
    ("upstream check and report (outcome reads)", ("require_upstream_passed (quality/gates.py:", "main (quality/report.py:")),
    ("staging writes (the batch computed)", ("stage_batch (pipelines/lake.py:",)),
    ("publish commits (MERGE, overwrite)", ("publish (pipelines/lake.py:", "overwrite (pipelines/lake.py:")),
    ("bronze: input listing", ("list_input (pipelines/bronze.py:",)),
    ("stage marks (log listings, input fingerprint, mark files)", (
        "lake_state (pipelines/marks.py:", "read_mark (pipelines/marks.py:", "state_after (pipelines/marks.py:",
        "write_mark (pipelines/marks.py:",
    )),
    ("exports, plots, predictor", ("sync (pipelines/exports.py:", "plot_model (pipelines/gold_plots.py:", "plot_confusion (", "write_predictor (")),
)
REST = "the rest (table reads, counts, model loads, imports)"
MAIN_THREAD = "_run_module_as_main (<frozen runpy>"
# A sample is a stage's when the stage module's main (pipelines.run) or run (bench.measure's chain)
# is on its stack. In bench.measure's chain the upstream check, the stage mark and the auditor run
# outside the stage's run (`run_chain`), so the running-application column counts them "outside
# the stages", where pipelines.run's columns count them in the stage's main (0.1 s in all).
STAGE_ENTRIES = ("main", "run")


def tally(raw_lines: Iterable[str]) -> tuple[float, dict[str, float], dict[str, float]]:
    """(seconds, seconds per part, seconds per stage) of the main thread in py-spy raw output
    (one `frame;frame;... count` line per distinct stack, outermost frame first)."""
    parts: Counter[str] = Counter()
    per_stage: Counter[str] = Counter()
    total = 0
    for line in raw_lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack.startswith(MAIN_THREAD):
            continue
        samples = int(count)
        total += samples
        parts[next((name for name, functions in PARTS if any(f in stack for f in functions)), REST)] += samples
        per_stage[next((s for s in stages.names() if any(f";{f} (pipelines/{s}.py:" in stack for f in STAGE_ENTRIES)),
                       "outside the stages")] += samples
    seconds = lambda counts: {name: round(n / SAMPLE_RATE, 1) for name, n in counts.items()}  # noqa: E731
    return round(total / SAMPLE_RATE, 1), seconds(parts), seconds(per_stage)


def profiled_run(py_spy: str, command: Sequence[str], raw: Path, log: Path) -> tuple[float, dict, dict]:
    """Run `command` under py-spy (idle samples too: a driver waiting on Spark is the run's time)."""
    with log.open("a", encoding="utf-8") as out:
        subprocess.run(
            [py_spy, "record", "--idle", "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(raw), "--", *command],
            stdout=out, stderr=subprocess.STDOUT, check=True,
        )
    return tally(raw.read_text(encoding="utf-8").splitlines())


def warm_run(chain_command: Sequence[str], source: Path, increments: Sequence[Sequence[str]], root: Path, log: Path) -> tuple[float, dict, dict]:
    """The watch mode's increment (bench.measure chain_warm): two increments copied in one after the
    other, the chain running after each in one process, the main thread sampled from inside during
    the second (bench/stack_sampler.py; py-spy would see the whole process). Its whole-process
    column is that run alone: the session start and the first increment are outside it."""
    folders = [dataset.materialize(source, increment, root / f"warm-{n}") for n, increment in enumerate(increments, 1)]
    raw = root / "warm.txt"
    options = [arg for arg in chain_command if arg.startswith(("--conf=", "--set="))]
    command = [sys.executable, "-m", "bench.measure", "chain_warm", "--out", str(root / "warm.json"),
               *(f"--then-add={folder}" for folder in folders), f"--sample-stacks={raw}", *options]
    with log.open("a", encoding="utf-8") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)
    return tally(raw.read_text(encoding="utf-8").splitlines())


def markdown(first: str, columns: dict[str, dict[str, float]], rows: Sequence[str], totals: dict[str, float]) -> str:
    header = f"| {first} | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns)
    lines = [f"| {row} | " + " | ".join(f"{columns[c].get(row, 0.0):.1f}" for c in columns) + " |" for row in rows]
    return "\n".join([header, *lines, "| **whole process** | " + " | ".join(f"**{totals[c]:.1f}**" for c in columns) + " |"])


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, metavar="N", help="images in the lake (default: conf bench.images)")
    args = parser.parse_args(argv)
    if args.images is not None:
        args.overrides.append(f"bench.images={args.images}")
    conf = load_stage_conf(args)
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if py_spy is None:
        print("bench.profile: py-spy is not installed: run `make setup` (requirements.lock pins it)", file=sys.stderr)
        return 2
    try:
        source = source_folder(conf)
        selection = dataset.select(
            dataset.bench_order(dataset.list_images(source, conf["input.extensions"]), conf["bench.seed"]),
            conf["bench.images"], conf["bench.incremental_fraction"], conf["bench.memory_factor"],
        )
        prepare_weights(conf)
    except (ConfError, dataset.BenchDataError, features.WeightsUnavailable) as exc:
        print(f"bench.profile: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = Path(conf.path("bench.work_dir")) / f"profile-{stamp}"
    input_dir, lake, log = root / "input", root / "lake", root / "profile.log"
    root.mkdir(parents=True)
    dataset.materialize(source, selection.base, input_dir)
    layers = stages.through("gold")
    command = [sys.executable, "-m", "pipelines.run", "--no-report", f"--jobs={','.join(layers)}"]
    command += [f"--conf={f}" for f in args.conf or ["conf/local.yaml"]]
    command += [f"--set={item}" for item in [*args.overrides, f"input.path={input_dir}", f"lake.root={lake}"]]
    machine = describe_machine()
    print(f"bench.profile {stamp}: N = {len(selection.base)}, increment {len(selection.increment)}, stages "
          f"{','.join(layers)}; load average {machine['load_average_1m_5m_15m']}; log {log}", flush=True)
    try:
        started = time.perf_counter()
        with log.open("w", encoding="utf-8") as out:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)
        full_seconds = round(time.perf_counter() - started, 1)
        print(f"  lake built in {full_seconds} s (whole process, not profiled); profiling the run with nothing new ...", flush=True)
        runs = {"no-op": profiled_run(py_spy, command, root / "noop.txt", log)}
        dataset.materialize(source, selection.increment, input_dir)
        print(f"  profiling the run after +{len(selection.increment)} images ...", flush=True)
        runs[f"+{len(selection.increment)} images"] = profiled_run(py_spy, command, root / "increment.txt", log)
        print(f"  profiling +{len(selection.increment)} images in a running application (after one increment in it) ...", flush=True)
        runs[f"+{len(selection.increment)}, running application"] = warm_run(command, source, selection.warm_increments, root, log)
    except subprocess.CalledProcessError as exc:
        print(f"bench.profile: `{' '.join(exc.cmd[:6])} ...` exited {exc.returncode}; see {log}", file=sys.stderr)
        return 1
    totals = {name: run[0] for name, run in runs.items()}
    parts_table = markdown("part", {n: r[1] for n, r in runs.items()}, [name for name, _ in PARTS] + [REST], totals)
    stages_table = markdown("stage", {n: r[2] for n, r in runs.items()}, [*layers, "outside the stages"], totals)
    ratios = ", ".join(f"{name} / full {seconds / full_seconds:.2f}" for name, seconds in totals.items())
    print("\n" + parts_table + "\n\n" + stages_table + f"\n\nwhole processes: full {full_seconds} s; {ratios}")
    results = Path(conf.path("bench.results_dir")) / f"profile-{stamp}.json"
    document = {
        "kind": "profile", "started": stamp, "machine": machine, "images": len(selection.base),
        "increment": len(selection.increment), "full_seconds": full_seconds, "runs": {n: {"seconds": r[0], "parts": r[1], "stages": r[2]} for n, r in runs.items()},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    results.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {results}; load average at end {document['load_average_at_end'][0]} (timings on a busy machine are noisy)")
    shutil.rmtree(root / "input", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
