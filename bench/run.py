"""`make bench`: measure silver against the model's limit and the reference, the chain, the increment, memory.

    python -m bench.run --conf conf/local.yaml [--set key=value ...] [--images N]
    python -m bench.run --conf conf/local.yaml --sweep silver.batch_size=32,64,128 [--sweep ...]

A bench run copies a fixed selection of the Fruits-360 sample (bench/dataset.py) into a fresh
work folder (`bench.work_dir`/<timestamp>), then runs each measurement of bench/measure.py in
its own process, in this order: the Keras limit, the TFLite limit, the runtime options (speed,
feature error, gold accuracy), reference, bronze + silver at N (memory sampled) + silver with the
other runtime on a copy of that bronze lake, the chain at N, again with nothing new (also as whole
processes: one per stage, then `python -m pipelines.run`), and after adding the increment (in a
new process, then twice more in one application: the watch mode's case); bronze +
silver at memory_factor x N, the chain on that lake, and again after an increment of the same size;
last, the GX side of a gate as the lake's runs accumulate (bench/data_docs.py). It
prints the measurements, every ratio with PASS/MISS against `bench.targets`, and the memory
peaks, and writes all of it, with the machine's description, to `bench.results_dir`/<timestamp>.json
and latest.json (key silver.images_per_s_per_vcpu is read by `python -m deploy cost`).

`--sweep KEY=V1,V2,...` (repeatable) is the tuning mode: the limit and bronze once, then one
silver run per value of each key (other settings as in conf), on copies of that bronze lake; it
prints and writes `sweep-<timestamp>.json`, and leaves latest.json alone.

Every `--conf`/`--set` is passed on to the measurements, so silver's settings can be tried
without editing conf (`--set silver.batch_size=128`). Timings are wall-clock: on a machine shared
with other work they are noisy, and the JSON records the load average seen by each measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import dataset, summary
from bench.machine import describe_machine
from pipelines import features, stages
from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import PROJECT_ROOT, Conf, ConfError

SCHEMA_VERSION = 1
LOG_TAIL_LINES = 25


@dataclass
class Bench:
    """One bench run: its conf options (passed on to every measurement) and its work folder."""

    conf: Conf
    conf_files: list[str]
    overrides: list[str]
    root: Path
    planned: int
    done: int = 0
    failed: list[str] = field(default_factory=list)

    def folder(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def measure(
        self, name: str, kind: str, input_dir: Path, lake_dir: Path | None, extra: Sequence[str] = (),
        arguments: Sequence[str] = (),
    ) -> dict:
        """Run `bench.measure KIND [arguments]` in a new process (own session) and return its JSON result."""
        self.done += 1
        out = self.folder("measurements") / f"{name}.json"
        log = self.folder("logs") / f"{name}.log"
        command = [sys.executable, "-m", "bench.measure", kind, "--out", str(out), *arguments]
        for file in self.conf_files:
            command += ["--conf", file]
        lake = [f"lake.root={lake_dir}"] if lake_dir is not None else []
        for item in [*self.overrides, f"input.path={input_dir}", *lake, *extra]:
            command += ["--set", item]
        print(f"[{self.done}/{self.planned}] {name} ({kind}{', ' + ', '.join(extra) if extra else ''}) ...", flush=True)
        started = time.perf_counter()
        returncode = run_logged(command, log, self.conf["bench.measurement_timeout_minutes"] * 60)
        result = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
        if returncode != 0 and "error" not in result:
            result = {"error": f"exit code {returncode} ({'timed out' if returncode is None else 'no result'})"}
        result["process_seconds"] = round(time.perf_counter() - started, 1)
        result["log"] = str(log)
        if "error" in result:
            self.failed.append(name)
            print(f"    FAILED: {result['error']}\n    log {log}, last lines:\n{tail(log)}", flush=True)
        else:
            rate = f", {result['images_per_s']} images/s" if result.get("images_per_s") is not None else ""
            images = f"{result['images']} images in " if result.get("images") is not None else ""
            print(f"    {images}{result.get('seconds')} s{rate} (process {result['process_seconds']} s)", flush=True)
        return result


    def processes(self, name: str, modules: Sequence[str], input_dir: Path, lake_dir: Path, arguments: Sequence[str] = ()) -> dict:
        """Run `python -m MODULE [arguments]` for each module in turn, with the bench's conf, as a
        user would; the result is their whole wall time, JVM starts and imports included."""
        self.done += 1
        log = self.folder("logs") / f"{name}.log"
        options = [f"--conf={file}" for file in self.conf_files]
        options += [f"--set={item}" for item in [*self.overrides, f"input.path={input_dir}", f"lake.root={lake_dir}"]]
        print(f"[{self.done}/{self.planned}] {name} ({', '.join(modules)}, whole processes) ...", flush=True)
        result: dict = {"modules": list(modules), "log": str(log)}
        started = time.perf_counter()
        for module in modules:
            part = self.folder("logs") / f"{name}-{module}.log"
            returncode = run_logged([sys.executable, "-m", module, *arguments, *options], part,
                                    self.conf["bench.measurement_timeout_minutes"] * 60)
            log.write_text((log.read_text(encoding="utf-8") if log.is_file() else "") + part.read_text(encoding="utf-8"),
                           encoding="utf-8")
            if returncode != 0:
                result["error"] = f"{module}: exit code {returncode}"
                self.failed.append(name)
                print(f"    FAILED: {result['error']}\n    log {part}, last lines:\n{tail(part)}", flush=True)
                return result
        result["process_seconds"] = round(time.perf_counter() - started, 1)
        print(f"    {result['process_seconds']} s", flush=True)
        return result


def run_logged(command: list[str], log: Path, timeout_s: float) -> int | None:
    """Run `command` in its own process group, output to `log`; None when it timed out (group stopped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # the measurement, its JVM and Python workers
            process.wait()
            return None


def tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    return "\n".join("      " + line for line in text[-lines:])


def source_folder(conf: Conf) -> Path:
    """The sample the images come from: input.seed_path when set and present, else input.path."""
    candidates = [conf.path("input.seed_path")] if conf["input.seed_path"] else []
    candidates.append(conf.path("input.path"))
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    raise dataset.BenchDataError(
        f"no image folder for the bench: tried {', '.join(candidates)} (conf input.seed_path, input.path; "
        f"env FRUITS_SAMPLE / FRUITS_INPUT). `make run` prepares input.path; README, section 'Data'."
    )


def prepare_weights(conf: Conf) -> None:
    """Put the weights file in the Keras cache once, before the measurements that read it from there,
    and with `silver.runtime: tflite` its conversion and the record naming it (pipelines/runtimes.py):
    a one-time cost per weights file and TensorFlow version (10-15 s) that only a machine's first
    run pays, so the measurements time the runs after it, as every later run of the pipeline is."""
    from pipelines import runtimes, silver

    settings = silver.weights_settings(conf)
    if settings.choice != "imagenet":
        return
    features.locate_weights_file(settings)
    runtime = silver.runtime(conf)
    if runtime.engine == "tflite":
        features.use_keras_home(settings.keras_home)
        runtimes.load_driver_model(settings, runtime)


def new_bench(conf: Conf, conf_files: list[str], overrides: list[str], planned: int, stamp: str) -> Bench:
    root = Path(conf.path("bench.work_dir")) / stamp
    root.mkdir(parents=True, exist_ok=False)
    return Bench(conf, conf_files, overrides, root, planned)


def full_bench(bench: Bench, source: Path, selection: dataset.Selection) -> dict:
    """Every measurement; returns them by name (see bench.summary for the names)."""
    inputs, lakes = "inputs", "lakes"
    base = dataset.materialize(source, selection.base, bench.folder(inputs, "base"))
    chain_input = dataset.materialize(source, selection.base, bench.folder(inputs, "chain"))
    memory_input = dataset.materialize(source, selection.memory, bench.folder(inputs, "memory"))
    m: dict[str, dict] = {}
    m[summary.LIMIT] = bench.measure(summary.LIMIT, "limit", base, None, extra=runtime_overrides("keras"))
    m[summary.LIMIT_TFLITE] = bench.measure(summary.LIMIT_TFLITE, "limit", base, None, extra=runtime_overrides("tflite"))
    m[summary.RUNTIMES] = bench.measure(summary.RUNTIMES, "runtimes", base, bench.folder(lakes, "runtimes"))
    m[summary.REFERENCE] = bench.measure(summary.REFERENCE, "reference", base, bench.folder(lakes, "reference"))
    m["bronze"] = bench.measure("bronze", "bronze", base, bench.folder(lakes, "silver"))
    if "error" not in m["bronze"]:
        other_lake = bench.root / lakes / "silver-other-runtime"
        shutil.copytree(bench.root / lakes / "silver", other_lake)  # Delta tables hold relative paths
        m[summary.SILVER] = bench.measure(summary.SILVER, "silver", base, bench.folder(lakes, "silver"))
        other = "keras" if bench.conf["silver.runtime"] == "tflite" else "tflite"
        m[summary.SILVER_OTHER] = bench.measure(summary.SILVER_OTHER, "silver", base, other_lake,
                                                extra=runtime_overrides(other))
    chain_lake, memory_lake = bench.folder(lakes, "chain"), bench.folder(lakes, "memory")
    m[summary.CHAIN] = bench.measure(summary.CHAIN, "chain", chain_input, chain_lake)
    if "error" not in m[summary.CHAIN]:
        m[summary.NOOP] = bench.measure(summary.NOOP, "chain", chain_input, chain_lake)
        image_layers = stages.through("gold")  # the chain measure.run_chain times
        stage_modules = [stages.get(name).module_name for name in image_layers]
        m[summary.NOOP_PER_STAGE] = bench.processes(summary.NOOP_PER_STAGE, stage_modules, chain_input, chain_lake)
        m[summary.NOOP_ONE_APP] = bench.processes(
            summary.NOOP_ONE_APP, ["pipelines.run"], chain_input, chain_lake, ["--jobs", ",".join(image_layers)]
        )
        dataset.materialize(source, selection.increment, chain_input)
        m[summary.INCREMENTAL] = bench.measure(summary.INCREMENTAL, "chain", chain_input, chain_lake)
        if "error" not in m[summary.INCREMENTAL]:
            warm = [dataset.materialize(source, paths, bench.folder(inputs, f"warm-{n}"))
                    for n, paths in enumerate(selection.warm_increments, 1)]
            m[summary.INCREMENTAL_WARM] = bench.measure(
                summary.INCREMENTAL_WARM, "chain_warm", chain_input, chain_lake,
                arguments=[item for folder in warm for item in ("--then-add", str(folder))],
            )
    m["bronze_memory"] = bench.measure("bronze_memory", "bronze", memory_input, memory_lake)
    if "error" not in m["bronze_memory"]:
        m[summary.SILVER_MEMORY] = bench.measure(summary.SILVER_MEMORY, "silver", memory_input, memory_lake)
    if "error" not in m.get(summary.SILVER_MEMORY, {"error": "not run"}):
        # Gold over the 4N lake (bronze and silver have nothing new), then the increment's size of new images.
        m[summary.CHAIN_MEMORY] = bench.measure(summary.CHAIN_MEMORY, "chain", memory_input, memory_lake)
        dataset.materialize(source, selection.memory_increment, memory_input)
        m[summary.INCREMENTAL_MEMORY] = bench.measure(summary.INCREMENTAL_MEMORY, "chain", memory_input, memory_lake)
    m[summary.DATA_DOCS] = bench.measure(summary.DATA_DOCS, "data_docs", base, None)
    return m


def runtime_overrides(engine: str) -> list[str]:
    """--set items running `engine`: Keras runs the float32 model, TFLite keeps conf's quantization."""
    return [f"silver.runtime={engine}"] + (["silver.tflite_quantization=none"] if engine == "keras" else [])


def parse_sweep(items: Sequence[str]) -> list[str]:
    """`KEY=V1,V2` items -> the `KEY=V` overrides to try, in order."""
    settings = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfError(f"--sweep '{item}' must look like KEY=V1,V2,..., e.g. --sweep silver.batch_size=32,64,128")
        settings += [f"{key.strip()}={v.strip()}" for v in values.split(",") if v.strip()]
    return settings


def sweep_bench(bench: Bench, source: Path, selection: dataset.Selection, settings: list[str]) -> dict:
    base = dataset.materialize(source, selection.base, bench.folder("inputs", "base"))
    limit = bench.measure(summary.LIMIT, "limit", base, None)
    bronze_lake = bench.folder("lakes", "bronze")
    bronze = bench.measure("bronze", "bronze", base, bronze_lake)
    points = []
    for index, setting in enumerate(settings):
        if "error" in bronze:
            break
        lake = bench.root / "lakes" / f"sweep-{index}"
        shutil.copytree(bronze_lake, lake)  # Delta tables hold relative paths: a copy is the same table
        result = bench.measure(f"silver-{index}", "silver", base, lake, extra=[setting])
        points.append({"setting": setting, **result})
    return {"limit": limit, "bronze": bronze, "points": points}


def conf_summary(conf: Conf) -> dict:
    return {
        "sources": conf.sources,
        "spark.master": conf["spark.master"],
        "spark.extra": conf["spark.extra"],
        "silver": {k: conf[f"silver.{k}"] for k in ("weights", "batch_size", "arrow_batch_rows", "partitions_per_slot",
                                                    "tf_threads", "runtime", "tflite_quantization")},
    }


def write_results(conf: Conf, document: dict, name: str, latest: bool) -> Path:
    results = Path(conf.path("bench.results_dir"))
    results.mkdir(parents=True, exist_ok=True)
    path = results / name
    text = json.dumps(document, indent=2, default=str)
    path.write_text(text, encoding="utf-8")
    if latest:
        (results / "latest.json").write_text(text, encoding="utf-8")
    return path


def clean_work(bench: Bench) -> None:
    """Delete the images and lakes of a successful run (the logs and measurement JSON stay)."""
    if bench.failed or bench.conf["bench.keep_work"]:
        return
    for part in ("inputs", "lakes"):
        shutil.rmtree(bench.root / part, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, metavar="N",
                        help="images per throughput run (default: conf bench.images)")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="tuning mode: one silver run per value (repeatable); writes sweep-<timestamp>.json")
    args = parser.parse_args(argv)
    if args.images is not None:
        args.overrides.append(f"bench.images={args.images}")
    conf = load_stage_conf(args)
    try:
        sweep = parse_sweep(args.sweep)
        source = source_folder(conf)
        images = conf["bench.images"]
        selection = dataset.select(
            dataset.bench_order(dataset.list_images(source, conf["input.extensions"]), conf["bench.seed"]),
            images, conf["bench.incremental_fraction"], conf["bench.memory_factor"],
        )
        prepare_weights(conf)
    except (ConfError, dataset.BenchDataError, features.WeightsUnavailable) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    files = args.conf or ["conf/local.yaml"]
    machine = describe_machine()
    bench = new_bench(conf, files, args.overrides, 2 + len(sweep) if sweep else 18, stamp)
    print(f"bench {stamp}: N = {images} images from {source}, work folder {bench.root}\n"
          f"machine: {machine['cores']} cores, {machine['ram_gib']} GiB, {machine['cpu_model']}, "
          f"load average {machine['load_average_1m_5m_15m']}", flush=True)
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sweep" if sweep else "bench",
        "started_at": started.isoformat(),
        "machine": machine,
        "conf": conf_summary(conf),
        "images": {"n": images, "increment": len(selection.increment), "memory_n": len(selection.memory),
                   "source": str(source), "seed": conf["bench.seed"]},
        "work_dir": str(bench.root),
    }
    if sweep:
        result = sweep_bench(bench, source, selection, sweep)
        limit_rate = result["limit"].get("images_per_s")
        document.update(result, best=summary.best_per_key(result["points"]))
        print("\n" + summary.render_table(["setting", "silver images/s", "inference images/s", "x limit", "error"],
                                          summary.sweep_rows(result["points"], limit_rate)))
        print(f"limit {limit_rate} images/s; best per key: {document['best']}")
    else:
        measurements = full_bench(bench, source, selection)
        rows = summary.ratios(measurements, conf["bench.targets"])
        document.update(measurements=measurements, ratios=[r.as_dict() for r in rows],
                        silver=summary.cost_throughput(measurements))
        print("\n" + summary.measurements_table(measurements) + "\n\n" + summary.ratios_table(rows) + "\n\n"
              + summary.runtime_options_table(measurements, conf["bench.targets.accuracy_drop"]) + "\n\n"
              + summary.memory_table(measurements, images, len(selection.memory)))
    document["finished_at"] = datetime.now(timezone.utc).isoformat()
    document["failed"] = bench.failed
    document["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = write_results(conf, document, f"{'sweep-' if sweep else ''}{stamp}.json", latest=not sweep)
    clean_work(bench)
    print(f"\nresults: {path}" + ("" if sweep else f" and {path.parent / 'latest.json'}")
          + f"; load average at start {machine['load_average_1m_5m_15m'][0]}, at end {document['load_average_at_end'][0]} "
          f"on {machine['cores']} cores (timings on a busy machine are noisy)")
    if bench.failed:
        print(f"bench: failed measurements: {', '.join(bench.failed)} (logs under {bench.root / 'logs'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
