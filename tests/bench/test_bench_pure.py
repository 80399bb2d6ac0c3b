"""The bench's arithmetic and bookkeeping, without running anything: ratios, targets, /proc parsing, image selection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import dataset, memory, summary
from bench.machine import cpu_model, mem_total_bytes
from bench.run import parse_sweep
from pipelines.config import ConfError, load_conf

TARGETS = {"silver_vs_limit": 0.9, "silver_vs_limit_4n": 0.95, "silver_vs_reference": 1.3, "chain_vs_silver": 1.25,
           "noop_vs_full": 0.1, "incremental_vs_full": 0.15, "incremental_growth": 1.15, "driver_memory_growth": 1.25}


def _memory(driver: float, heap_after_gc: float) -> dict:
    return {"python_driver_rss_mib": driver, "jvm_heap_after_gc_mib": heap_after_gc, "jvm_rss_mib": 900.0,
            "workers_pss_sum_mib": 1000.0}


def _measurements() -> dict:
    return {
        "limit": {"images": 100, "seconds": 5.0, "images_per_s": 20.0},
        "reference": {"images": 100, "seconds": 10.0, "images_per_s": 10.0},
        "silver": {"images": 100, "seconds": 6.25, "images_per_s": 16.0, "inference_images_per_s": 19.0,
                   "vcpus": 2, "memory": _memory(800.0, 100.0)},
        "chain": {"images": 100, "seconds": 10.0, "stages": {"bronze": 1.0, "silver": 8.0, "gold": 1.0}},
        "chain_noop": {"images": 0, "seconds": 0.5, "stages": {"bronze": 0.3, "silver": 0.1, "gold": 0.1}},
        "noop_stage_processes": {"process_seconds": 60.0},
        "noop_one_application": {"process_seconds": 24.0},
        "chain_incremental": {"images": 5, "seconds": 2.0, "stages": {"bronze": 0.5, "silver": 1.0, "gold": 0.5}},
        "chain_incremental_warm": {"images": 5, "seconds": 1.0, "stages": {"bronze": 0.2, "silver": 0.6, "gold": 0.2}},
        "chain_memory": {"images": 0, "seconds": 4.0, "stages": {"bronze": 0.5, "silver": 0.5, "gold": 3.0}},
        "chain_incremental_memory": {"images": 5, "seconds": 2.4, "stages": {"bronze": 0.6, "silver": 1.1, "gold": 0.7}},
        "silver_memory": {"images": 400, "seconds": 20.0, "images_per_s": 20.0, "inference_images_per_s": 21.0,
                          "vcpus": 2, "memory": _memory(840.0, 300.0)},
    }


def test_ratios_are_computed_from_the_same_run_and_judged_against_their_targets():
    rows = {r.name: r for r in summary.ratios(_measurements(), TARGETS)}
    assert (rows["silver / limit"].value, rows["silver / limit"].status) == (0.8, "MISS")
    assert (rows["silver / reference"].value, rows["silver / reference"].status) == (1.6, "PASS")
    assert (rows["chain / silver"].value, rows["chain / silver"].status) == (1.25, "PASS")  # the bound is inclusive
    assert (rows["incremental / full"].value, rows["incremental / full"].status) == (0.2, "MISS")
    assert (rows["driver Python RSS, 4N / N"].value, rows["driver Python RSS, 4N / N"].status) == (1.05, "PASS")
    assert (rows["driver JVM live heap, 4N / N"].value, rows["driver JVM live heap, 4N / N"].status) == (3.0, "MISS")
    assert (rows["silver at 4N / limit"].value, rows["silver at 4N / limit"].status) == (1.0, "PASS")
    assert (rows["no-op / full"].value, rows["no-op / full"].status) == (0.05, "PASS")
    assert (rows["incremental on a 4x lake / incremental"].value, rows["incremental on a 4x lake / incremental"].status) == (1.2, "MISS")
    one_app = rows["no-op processes, one application / one per stage"]
    assert (one_app.value, one_app.status) == (0.4, "info")
    warm = rows["incremental in a running application / full"]
    assert (warm.value, warm.status) == (0.1, "info")
    assert rows["silver inference pass / limit"].status == "info"
    assert rows["silver inference pass / limit"].target is None
    # (400 - 100) images in (20 - 6.25) s = 21.82 images/s, over the limit's 20
    assert summary.silver_marginal_rate(_measurements()) == 21.82
    assert (rows["silver marginal rate / limit"].value, rows["silver marginal rate / limit"].status) == (1.091, "info")


def test_a_failed_or_missing_measurement_gives_no_ratio_rather_than_a_guess():
    measurements = _measurements()
    measurements["reference"] = {"error": "RuntimeError: boom"}
    del measurements["chain_incremental"]
    rows = {r.name: r for r in summary.ratios(measurements, TARGETS)}
    assert (rows["silver / reference"].value, rows["silver / reference"].status) == (None, "n/a")
    assert (rows["incremental / full"].value, rows["incremental / full"].status) == (None, "n/a")
    assert rows["silver / limit"].status == "MISS"
    del measurements["silver_memory"]
    assert summary.silver_marginal_rate(measurements) is None


def test_cost_throughput_is_per_vcpu_from_the_largest_silver_run_else_the_n_run():
    measurements = _measurements()
    assert summary.cost_throughput(measurements) == {
        "images_per_s_per_vcpu": 10.0, "images_per_s": 20.0, "vcpus": 2, "images": 400, "from_measurement": "silver_memory",
    }
    measurements["silver_memory"] = {"error": "timed out"}
    assert summary.cost_throughput(measurements)["images_per_s_per_vcpu"] == 8.0
    measurements["silver"] = {"error": "x"}
    assert summary.cost_throughput(measurements) is None


def test_tables_show_every_measurement_ratio_and_status():
    measurements = _measurements()
    measurements["reference"] = {"error": "RuntimeError: boom"}
    text = summary.measurements_table(measurements)
    assert "FAILED: RuntimeError: boom" in text and "bronze 1.0 s, silver 8.0 s, gold 1.0 s" in text
    assert "nothing new, python -m pipelines.run | " in text and "gold 3.0 s" in text
    ratios_text = summary.ratios_table(summary.ratios(measurements, TARGETS))
    assert "| silver / limit" in ratios_text and ">= 0.9" in ratios_text and "MISS" in ratios_text and "n/a" in ratios_text
    memory_text = summary.memory_table(measurements, 100, 400)
    assert "N = 100" in memory_text and "3.0" in memory_text


def test_both_runtimes_are_reported_side_by_side_with_the_feature_and_accuracy_targets():
    measurements = _measurements()
    measurements["silver"] |= {"runtime": "tflite", "inference_images_per_s": 45.0}
    measurements["limit_tflite"] = {"images": 100, "seconds": 2.0, "images_per_s": 50.0, "runtime": "tflite"}
    measurements["silver_other_runtime"] = {"images": 100, "seconds": 8.0, "images_per_s": 12.5,
                                            "inference_images_per_s": 18.0, "runtime": "keras"}
    measurements["runtimes"] = {"images": 100, "test_images": 30, "options": [
        {"runtime": "keras", "images_per_s": 20.0, "max_abs_diff_vs_keras": 0.0, "gold_accuracy": 0.9, "exact_pca_accuracy": 0.8,
         "accuracy_change": 0.0},
        {"runtime": "tflite", "images_per_s": 60.0, "max_abs_diff_vs_keras": 3e-5, "gold_accuracy": 0.9,
         "exact_pca_accuracy": 0.8, "accuracy_change": 0.0},
        {"runtime": "tflite-float16", "images_per_s": 40.0, "max_abs_diff_vs_keras": 0.05, "gold_accuracy": 0.88,
         "exact_pca_accuracy": 0.79, "accuracy_change": -0.02},
    ]}
    targets = TARGETS | {"silver_inference_vs_limit": 2.0, "feature_max_abs_diff": 1e-4, "accuracy_drop": 0.005}
    rows = {r.name: r for r in summary.ratios(measurements, targets)}
    assert (rows["silver inference pass / limit"].value, rows["silver inference pass / limit"].status) == (2.25, "PASS")
    assert (rows["TFLite limit / Keras limit"].value, rows["TFLite limit / Keras limit"].status) == (2.5, "info")
    assert rows["silver (keras) inference pass / limit"].value == 0.9
    assert (rows["largest |feature - Keras| (tflite)"].value, rows["largest |feature - Keras| (tflite)"].status) == (3e-5, "PASS")
    assert (rows["gold accuracy change (tflite)"].status, rows["gold accuracy change (tflite)"].target) == ("PASS", -0.005)
    table = summary.runtime_options_table(measurements, 0.005)
    assert "| tflite-float16" in table and "exact-PCA accuracy" in table and "accuracy drops" in table and "acceptable" in table and "3.00e-05" in table
    assert "tflite, inference pass 45.00 images/s" in summary.measurements_table(measurements)


def test_sweep_items_expand_to_one_override_per_value_and_the_best_is_the_fastest():
    assert parse_sweep(["silver.batch_size=32, 64", "silver.tf_threads=1"]) == [
        "silver.batch_size=32", "silver.batch_size=64", "silver.tf_threads=1",
    ]
    with pytest.raises(ConfError, match="KEY=V1,V2"):
        parse_sweep(["silver.batch_size"])
    points = [
        {"setting": "silver.batch_size=32", "images_per_s": 10.0},
        {"setting": "silver.batch_size=64", "images_per_s": 12.0},
        {"setting": "silver.tf_threads=2", "error": "boom"},
        {"setting": "silver.tf_threads=1", "images_per_s": 9.0},
    ]
    assert summary.best_per_key(points) == {"silver.batch_size": "silver.batch_size=64", "silver.tf_threads": "silver.tf_threads=1"}


def test_selection_is_nested_prefixes_of_one_seeded_order():
    paths = [f"Training/L{i % 7}/{i}.jpg" for i in range(100)]
    order = dataset.bench_order(paths, seed=1)
    assert order == dataset.bench_order(list(reversed(paths)), seed=1)  # independent of the listing order
    assert order != sorted(paths)
    chosen = dataset.select(order, images=20, incremental_fraction=0.05, memory_factor=4)
    assert chosen.base == order[:20]
    assert chosen.increment == order[20:21]
    assert chosen.memory == order[:80]
    assert chosen.memory_increment == order[80:81]  # new to the 4N lake, as the increment is to the N lake
    assert not set(chosen.increment) & set(chosen.base)
    assert chosen.warm_increments == (order[21:22], order[22:23])  # new to the N lake after the increment


def test_selection_asking_for_more_images_than_the_sample_names_the_settings():
    with pytest.raises(dataset.BenchDataError, match="bench.images=30 x bench.memory_factor=4"):
        dataset.select([f"{i}.jpg" for i in range(100)], images=30, incremental_fraction=0.05, memory_factor=4)


def test_list_and_materialize_keep_split_label_folders_with_spaces(tmp_path):
    source = tmp_path / "src"
    for rel in ("Training/Apple Braeburn/1_100.jpg", "Test/Kiwi/2.JPG", "manifest.csv"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(b"x" * 3)
    listed = dataset.list_images(source, ["jpg", "png"])
    assert listed == ["Test/Kiwi/2.JPG", "Training/Apple Braeburn/1_100.jpg"]
    os.utime(source / listed[1], (1_000_000_000, 1_000_000_000))
    dest = dataset.materialize(source, listed, tmp_path / "dest")
    copy = dest / "Training/Apple Braeburn/1_100.jpg"
    assert copy.read_bytes() == b"xxx" and copy.stat().st_mtime == 1_000_000_000


def test_the_jvm_and_the_python_workers_are_told_apart_by_their_program():
    assert memory.is_jvm(["/usr/lib/jvm/bin/java", "-cp", "x"]) and not memory.is_jvm(["/bin/bash", "spark-submit"])
    assert memory.is_python(["/venv/bin/python3", "-m", "pyspark.daemon"]) and not memory.is_python([])


def test_peaks_keep_the_largest_value_and_report_mib():
    peaks = memory.Peaks()
    for value in (3 * memory.MIB, None, 5 * memory.MIB, 4 * memory.MIB):
        peaks.raise_to("jvm_rss", value)
    peaks.samples, peaks.load_sum = 2, 3.0
    report = peaks.as_mib()
    assert report["jvm_rss_mib"] == 5.0 and report["python_driver_rss_mib"] is None
    assert report["mean_load_average_1m"] == 1.5


def test_sampler_sees_this_process():
    with memory.MemorySampler(poll_seconds=0.01) as sampler:
        pass
    assert sampler.peaks.python_driver_rss > 0 and sampler.peaks.samples >= 2


def test_machine_description_parsers():
    assert cpu_model("processor: 0\nmodel name\t: Intel(R) Xeon(R)\n") == "Intel(R) Xeon(R)"
    assert mem_total_bytes("MemTotal:       1024 kB\n") == 1024 * 1024


def test_the_cost_tool_reads_the_file_the_bench_writes():
    conf = load_conf(["conf/local.yaml"])
    assert Path(conf.path("aws.cost.benchmark_file")) == Path(conf.path("bench.results_dir")) / "latest.json"
