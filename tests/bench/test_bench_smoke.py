"""The bench machinery end to end on 8 images with random weights: `bench.run` plans and runs every
measurement, and the JSON has the schema the cost tool and the docs rely on. No timing is checked.

Each measurement runs here in the test process, on the suite's SparkSession, instead of in a
process of its own (that is `bench.run.run_logged`'s job, exercised below by one real
`python -m bench.measure` process): eight JVM and TensorFlow start-ups would cost the suite ten
minutes and test nothing the measurements themselves do not.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys

import pytest

from bench import measure, run, summary
from pipelines.config import PROJECT_ROOT, load_conf
from tests.conftest import copy_sample

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.long]

MEASUREMENT_KEYS = {"images", "seconds", "process_seconds", "log"}
PROCESS_KEYS = {"modules", "process_seconds", "log"}
DATA_DOCS_KEYS = {"seconds", "docs_volume_runs", "runs", "process_seconds", "log"}
MEMORY_KEYS = {
    "python_driver_rss_mib", "jvm_rss_mib", "jvm_heap_used_mib", "jvm_heap_after_gc_mib",
    "worker_max_rss_mib", "workers_pss_sum_mib", "python_workers_seen", "samples", "mean_load_average_1m",
}


@pytest.fixture
def measurements_in_this_process(spark, monkeypatch):
    """`bench.run` runs `python -m bench.measure ...` commands; run them as `measure.main(...)` here,
    on the suite's session (which the measurements must not stop), output into the same log file."""
    monkeypatch.setattr(spark, "stop", lambda: None)
    monkeypatch.setenv("KERAS_HOME", str(PROJECT_ROOT / "work" / "keras"))  # restored after the test
    commands = []

    def run_in_process(command, log, timeout_s):
        assert command[:2] == [sys.executable, "-m"], command
        module = command[2]
        commands.append(command[3] if module == "bench.measure" else module)
        main = measure.main if module == "bench.measure" else importlib.import_module(module).main
        with log.open("w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            return main(command[3:])

    monkeypatch.setattr(run, "run_logged", run_in_process)
    return commands


def test_bench_runs_every_measurement_and_writes_the_results_schema(sample, tmp_path, capsys, measurements_in_this_process):
    results = tmp_path / "results"
    code = run.main([
        "--conf", "conf/local.yaml", "--images", "8",
        "--set", "silver.weights=random", "--set", "bench.memory_factor=2", "--set", "quality.docs_volume_runs=3",
        "--set", f"bench.results_dir={results}", "--set", f"bench.work_dir={tmp_path / 'work'}",
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert measurements_in_this_process == [
        "limit", "limit", "runtimes", "reference", "bronze", "silver", "silver", "chain", "chain",
        "pipelines.bronze", "pipelines.silver", "pipelines.gold", "pipelines.run", "chain", "chain_warm", "bronze", "silver",
        "chain", "chain", "data_docs",
    ]

    files = sorted(p.name for p in results.iterdir())
    assert len(files) == 2 and "latest.json" in files
    latest = json.loads((results / "latest.json").read_text())
    assert latest == json.loads((results / [f for f in files if f != "latest.json"][0]).read_text())

    assert latest["schema_version"] == run.SCHEMA_VERSION and latest["kind"] == "bench" and latest["failed"] == []
    assert {"cpu_model", "cores", "ram_gib", "os", "python", "java", "packages", "load_average_1m_5m_15m"} <= set(latest["machine"])
    assert latest["machine"]["packages"]["pyspark"] == "4.0.2"
    assert latest["images"] == {"n": 8, "increment": 1, "memory_n": 16, "source": str(sample), "seed": 360}
    assert latest["conf"]["silver"]["weights"] == "random"

    m = latest["measurements"]
    processes = {"noop_stage_processes", "noop_one_application"}
    assert set(m) == {
        "limit", "limit_tflite", "runtimes", "reference", "bronze", "silver", "silver_other_runtime", "chain",
        "chain_noop", *processes, "chain_incremental", "chain_incremental_warm", "bronze_memory", "silver_memory", "chain_memory",
        "chain_incremental_memory", "data_docs",
    }
    for name, result in m.items():
        keys = PROCESS_KEYS if name in processes else DATA_DOCS_KEYS if name == "data_docs" else MEASUREMENT_KEYS
        assert keys <= set(result), name
    assert [r["runs_held"] for r in m["data_docs"]["runs"]] == [1, 3, 30]  # one, a volume's, ten volumes'
    assert m["chain_noop"]["images"] == 0 and m["chain_noop"]["silver_images"] == 0
    assert m["chain_incremental_memory"]["images"] == 1 and m["chain_incremental_memory"]["gold_mode"] == "incremental"
    assert m["limit"]["images"] == m["reference"]["images"] == m["silver"]["images"] == m["chain"]["images"] == 8
    assert m["reference"]["models_built"] >= 1
    assert (m["limit"]["runtime"], m["limit_tflite"]["runtime"]) == ("keras", "tflite")
    assert (m["silver"]["runtime"], m["silver_other_runtime"]["runtime"]) == ("tflite", "keras")
    assert m["silver_other_runtime"]["featurized"] == 8
    options = {o["runtime"]: o for o in m["runtimes"]["options"]}
    assert list(options) == ["keras", "tflite", "tflite-float16", "tflite-dynamic_range"]
    assert options["keras"]["max_abs_diff_vs_keras"] == 0 and options["tflite"]["max_abs_diff_vs_keras"] < 1e-4
    assert m["chain_incremental"]["images"] == 1 and m["chain_incremental"]["silver_images"] == 1
    assert m["chain_incremental"]["gold_mode"] == "incremental"
    warm = m["chain_incremental_warm"]  # two more images, one at a time, in one application: the second timed
    assert (warm["images"], warm["first_in_process"]["images"], warm["gold_mode"]) == (1, 1, "incremental")
    assert set(m["chain"]["stages"]) == {"bronze", "silver", "gold"}
    assert m["silver_memory"]["images"] == 16
    for name in ("silver", "silver_memory"):
        assert MEMORY_KEYS <= set(m[name]["memory"])
        assert m[name]["memory"]["python_workers_seen"] >= 1 and m[name]["memory"]["jvm_rss_mib"] > 0

    names = [r["name"] for r in latest["ratios"]]
    assert names == [r.name for r in summary.ratios(m, load_conf(["conf/local.yaml"])["bench.targets"])]
    statuses = {r["name"]: r["status"] for r in latest["ratios"]}
    # 8 and 16 images on one warm session: the 16-image run may take no longer than the 8-image
    # one, and then a marginal rate cannot be derived (n/a); every other ratio must have a value.
    assert statuses.pop("silver marginal rate / limit") in {"info", "n/a"}
    # gold accuracy needs Training and Test images among the 8
    accuracy = statuses.pop("gold accuracy change (tflite)")
    assert accuracy in ({"PASS", "MISS"} if m["runtimes"]["test_images"] else {"n/a"})
    assert set(statuses.values()) <= {"PASS", "MISS", "info"}
    assert latest["silver"]["images_per_s_per_vcpu"] > 0 and latest["silver"]["from_measurement"] == "silver_memory"
    assert "| silver / limit" in printed and ("PASS" in printed or "MISS" in printed)
    assert "| runtime (single process)" in printed and "tflite-float16" in printed


def test_a_measurement_runs_in_its_own_process_and_writes_its_json(sample, tmp_path):
    """What bench.run starts for each measurement: `python -m bench.measure KIND --out FILE`."""
    images = tmp_path / "input"
    copy_sample(images, 4)
    out = tmp_path / "limit.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.measure", "limit", "--out", str(out), "--conf", "conf/local.yaml",
         "--set", "silver.weights=random", "--set", f"input.path={images}", "--set", "silver.batch_size=2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["images"] == 4 and result["failed"] == 0 and result["batch_size"] == 2
    assert result["images_per_s"] > 0 and result["memory"]["python_driver_rss_mib"] > 0
