"""From the measurements to the ratios, their PASS/MISS against the targets, and the printed tables.

Pure functions over the JSON-ready dictionaries the measurements return, so the arithmetic is
tested without running anything. A ratio whose measurement failed or was not run is `None` with
status `n/a`, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# Measurement names used by bench.run, in the order they run.
LIMIT, REFERENCE, SILVER, CHAIN, NOOP, NOOP_PER_STAGE, NOOP_ONE_APP, INCREMENTAL = (
    "limit", "reference", "silver", "chain", "chain_noop", "noop_stage_processes", "noop_one_application",
    "chain_incremental",
)
SILVER_MEMORY, CHAIN_MEMORY, INCREMENTAL_MEMORY = "silver_memory", "chain_memory", "chain_incremental_memory"
# The increment in an application that has run one before (the watch mode's case: JVM, code and Delta warm).
INCREMENTAL_WARM = "chain_incremental_warm"
# The runtime measurements (docs/silver.md, "Runtimes"): LIMIT is Keras' limit, LIMIT_TFLITE the
# TFLite interpreter's; SILVER runs silver.runtime, SILVER_OTHER the other runtime on the same images.
LIMIT_TFLITE, RUNTIMES, SILVER_OTHER = "limit_tflite", "runtimes", "silver_other_runtime"
# The GX side of bronze's gate with 1, a volume's and ten volumes' runs held (bench/data_docs.py).
DATA_DOCS = "data_docs"


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float | None
    target: float | None  # None: shown for information, no target
    comparison: str  # ">=" or "<="
    status: str  # PASS, MISS, n/a or info
    explains: str

    def as_dict(self) -> dict:
        return asdict(self)


def judge(value: float | None, target: float | None, comparison: str) -> str:
    if value is None:
        return "n/a"
    if target is None:
        return "info"
    passed = value >= target if comparison == ">=" else value <= target
    return "PASS" if passed else "MISS"


def _get(measurements: Mapping[str, Mapping], name: str, *keys: str) -> float | None:
    node = measurements.get(name)
    for key in keys:
        if not isinstance(node, Mapping) or "error" in node or node.get(key) is None:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def _divide(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return round(top / bottom, 3)


def silver_marginal_rate(measurements: Mapping[str, Mapping]) -> float | None:
    """Images/s of the images the memory run has beyond the N run: (4N - N) / (t(4N) - t(N)).

    Both runs pay the same fixed costs (weights, Python workers, Delta commits), so the difference
    is silver's per-image speed once they are paid: what a run of many images approaches.
    """
    small, large = _get(measurements, SILVER, "images"), _get(measurements, SILVER_MEMORY, "images")
    small_s, large_s = _get(measurements, SILVER, "seconds"), _get(measurements, SILVER_MEMORY, "seconds")
    if None in (small, large, small_s, large_s) or large <= small or large_s <= small_s:
        return None
    return round((large - small) / (large_s - small_s), 2)


def _data_docs_seconds(measurements: Mapping[str, Mapping], index: int) -> float | None:
    """The GX side of the gate at the `index`-th number of runs held (1, a volume, ten volumes)."""
    node = measurements.get(DATA_DOCS)
    runs = node.get("runs") if isinstance(node, Mapping) and "error" not in node else None
    return runs[index]["gate_gx_seconds"] if isinstance(runs, list) and len(runs) > index else None


def ratios(measurements: Mapping[str, Mapping], targets: Mapping[str, float]) -> list[Ratio]:
    """Every ratio the bench reports, with its target from conf `bench.targets`."""
    silver_rate = _get(measurements, SILVER, "images_per_s")
    rows = [
        ("silver / limit", _divide(silver_rate, _get(measurements, LIMIT, "images_per_s")),
         targets["silver_vs_limit"], ">=", "silver job images/s over single-process Keras on the same images"),
        ("silver at 4N / limit",
         _divide(_get(measurements, SILVER_MEMORY, "images_per_s"), _get(measurements, LIMIT, "images_per_s")),
         targets["silver_vs_limit_4n"], ">=", "the same with 4N images: silver's fixed costs spread over more images"),
        ("silver inference pass / limit",
         _divide(_get(measurements, SILVER, "inference_images_per_s"), _get(measurements, LIMIT, "images_per_s")),
         targets.get("silver_inference_vs_limit"), ">=",
         "silver's model pass alone (no read, weights load or publish) over the Keras limit"),
        ("silver marginal rate / limit", _divide(silver_marginal_rate(measurements), _get(measurements, LIMIT, "images_per_s")),
         None, ">=", "(4N - N images) / (silver's seconds at 4N - at N): silver once its fixed costs are paid"),
        ("silver / reference", _divide(silver_rate, _get(measurements, REFERENCE, "images_per_s")),
         targets["silver_vs_reference"], ">=", "silver job images/s over the seed notebook's job"),
        ("chain / silver", _divide(_get(measurements, CHAIN, "seconds"), _get(measurements, CHAIN, "stages", "silver")),
         targets["chain_vs_silver"], "<=", "bronze + silver + gold with gates, over silver's seconds in that run"),
        ("no-op / full", _divide(_get(measurements, NOOP, "seconds"), _get(measurements, CHAIN, "seconds")),
         targets["noop_vs_full"], "<=", "chain run again with nothing new, over the full chain run"),
        ("incremental / full", _divide(_get(measurements, INCREMENTAL, "seconds"), _get(measurements, CHAIN, "seconds")),
         targets["incremental_vs_full"], "<=", "chain run after adding the increment, over the full chain run"),
        ("incremental in a running application / full",
         _divide(_get(measurements, INCREMENTAL_WARM, "seconds"), _get(measurements, CHAIN, "seconds")),
         None, "<=", "the same number of new images, added to an application that ran an increment before "
         "(python -m pipelines.run --watch), over the full chain run"),
        ("incremental on a 4x lake / incremental",
         _divide(_get(measurements, INCREMENTAL_MEMORY, "seconds"), _get(measurements, INCREMENTAL, "seconds")),
         targets["incremental_growth"], "<=", "the same number of new images on the 4N lake: cost follows the new images"),
        ("gate's GX side, a full Data Docs volume / one run held",
         _divide(_get(measurements, DATA_DOCS, "seconds"), _data_docs_seconds(measurements, 0)),
         None, "<=", "bronze's gate in a GX project holding quality.docs_volume_runs runs, the most a gate sees, over one run"),
        ("gate's GX side, ten volumes' runs in one project / a full volume",
         _divide(_data_docs_seconds(measurements, 2), _get(measurements, DATA_DOCS, "seconds")),
         None, "<=", "what the volumes spare: one project keeping every run makes each gate dearer as the lake ages"),
        ("no-op processes, one application / one per stage",
         _divide(_get(measurements, NOOP_ONE_APP, "process_seconds"), _get(measurements, NOOP_PER_STAGE, "process_seconds")),
         None, "<=", "whole processes, JVM starts included: python -m pipelines.run over python -m pipelines.<stage> each"),
        ("driver Python RSS, 4N / N",
         _divide(_get(measurements, SILVER_MEMORY, "memory", "python_driver_rss_mib"),
                 _get(measurements, SILVER, "memory", "python_driver_rss_mib")),
         targets["driver_memory_growth"], "<=", "peak RSS of silver's Python driver"),
        ("driver JVM live heap, 4N / N",
         _divide(_get(measurements, SILVER_MEMORY, "memory", "jvm_heap_after_gc_mib"),
                 _get(measurements, SILVER, "memory", "jvm_heap_after_gc_mib")),
         targets["driver_memory_growth"], "<=", "peak heap after a garbage collection (local mode: driver + executor)"),
        ("driver JVM RSS, 4N / N",
         _divide(_get(measurements, SILVER_MEMORY, "memory", "jvm_rss_mib"), _get(measurements, SILVER, "memory", "jvm_rss_mib")),
         None, "<=", "the JVM process; grows with heap the collector was allowed to take, not only live data"),
        ("Python workers PSS, 4N / N",
         _divide(_get(measurements, SILVER_MEMORY, "memory", "workers_pss_sum_mib"),
                 _get(measurements, SILVER, "memory", "workers_pss_sum_mib")),
         None, "<=", "sum over the Python workers"),
    ]
    rows += runtime_ratios(measurements, targets)
    return [Ratio(name, value, target, comparison, judge(value, target, comparison), explains)
            for name, value, target, comparison, explains in rows]


def runtime_option(measurements: Mapping[str, Mapping], runtime: str | None) -> Mapping | None:
    """The runtimes measurement's figures for one runtime name (keras, tflite, tflite-float16...)."""
    node = measurements.get(RUNTIMES)
    if not isinstance(node, Mapping) or "error" in node or runtime is None:
        return None
    return next((o for o in node.get("options", []) if o.get("runtime") == runtime), None)


def runtime_ratios(measurements: Mapping[str, Mapping], targets: Mapping[str, float]) -> list[tuple]:
    """Both runtimes side by side: limits, silver with each, and what silver's runtime changes in the features."""
    keras_limit = _get(measurements, LIMIT, "images_per_s")
    chosen = (measurements.get(SILVER) or {}).get("runtime")
    other = (measurements.get(SILVER_OTHER) or {}).get("runtime")
    option = runtime_option(measurements, chosen) or {}
    keras_option = runtime_option(measurements, "keras") or {}
    return [
        ("TFLite limit / Keras limit", _divide(_get(measurements, LIMIT_TFLITE, "images_per_s"), keras_limit),
         None, ">=", "single-process TFLite interpreter (XNNPACK) over single-process Keras, same images"),
        (f"silver ({other}) inference pass / limit",
         _divide(_get(measurements, SILVER_OTHER, "inference_images_per_s"), keras_limit),
         None, ">=", "silver with the other runtime, model pass alone, over the Keras limit"),
        (f"silver ({other}) / limit", _divide(_get(measurements, SILVER_OTHER, "images_per_s"), keras_limit),
         None, ">=", "silver job with the other runtime over the Keras limit"),
        (f"largest |feature - Keras| ({chosen})", option.get("max_abs_diff_vs_keras"),
         targets.get("feature_max_abs_diff"), "<=", "silver's runtime against Keras on the bench images (runtimes)"),
        (f"gold accuracy change ({chosen})", option.get("accuracy_change"), _negated(targets.get("accuracy_drop")), ">=",
         "Test-split accuracy of a logistic regression on an exact PCA with gold's k rule, minus Keras' "
         f"({keras_option.get('exact_pca_accuracy')}; on gold's own PCA: {keras_option.get('gold_accuracy')})"),
    ]


def _negated(value: float | None) -> float | None:
    return None if value is None else -value


def runtime_options_table(measurements: Mapping[str, Mapping], accuracy_drop: float) -> str:
    """Each runtime option of the runtimes measurement: speed, feature error, gold accuracy, verdict."""
    node = measurements.get(RUNTIMES) or {}
    options = node.get("options", []) if "error" not in node else []
    keras = runtime_option(measurements, "keras") or {}
    rows = []
    for o in options:
        faster = _divide(o.get("images_per_s"), keras.get("images_per_s"))
        acceptable = o.get("accuracy_change") is not None and o["accuracy_change"] >= -accuracy_drop
        verdict = "reference" if o["runtime"] == "keras" else ("acceptable" if acceptable else "accuracy drops")
        rows.append([o["runtime"], o.get("images_per_s"), faster, f"{o.get('max_abs_diff_vs_keras', 0):.2e}",
                     o.get("gold_accuracy"), o.get("exact_pca_accuracy"), o.get("accuracy_change"), verdict])
    return render_table(["runtime (single process)", "images/s", "x Keras", "max |diff| vs Keras",
                         "gold accuracy", "exact-PCA accuracy", "change (exact PCA)", "verdict"], rows)


def cost_throughput(measurements: Mapping[str, Mapping]) -> dict | None:
    """`{"images_per_s_per_vcpu": x, ...}` for `python -m deploy cost`, from the largest silver run.

    The memory run (memory_factor x N images) spreads silver's fixed costs (weights, worker start,
    Delta commits) over the most images, so it is the closest to the per-image cost of a large
    run; the N run is used when the memory run failed.
    """
    for name in (SILVER_MEMORY, SILVER):
        rate = _get(measurements, name, "images_per_s")
        vcpus = _get(measurements, name, "vcpus")
        if rate and vcpus:
            return {
                "images_per_s_per_vcpu": round(rate / vcpus, 3),
                "images_per_s": rate,
                "vcpus": int(vcpus),
                "images": int(_get(measurements, name, "images") or 0),
                "from_measurement": name,
            }
    return None


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (readable as text too), right-aligned numbers."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells:
        lines.append("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "").replace("-", "").isdigit()


MEASUREMENT_LABELS = {
    LIMIT: "1. limit: single-process Keras",
    LIMIT_TFLITE: "1b. limit: single-process TFLite",
    REFERENCE: "2. reference: seed notebook job",
    "bronze": "   bronze (prepares silver)",
    SILVER: "3. silver job",
    SILVER_OTHER: "3b. silver job, other runtime",
    CHAIN: "4. chain: bronze+silver+gold+gates",
    NOOP: "5. chain, nothing new",
    NOOP_PER_STAGE: "   nothing new, one process per stage",
    NOOP_ONE_APP: "   nothing new, python -m pipelines.run",
    INCREMENTAL: "6. chain after +increment",
    INCREMENTAL_WARM: "6b. +increment, running application",
    "bronze_memory": "   bronze (prepares the memory run)",
    SILVER_MEMORY: "7. silver job, memory run",
    CHAIN_MEMORY: "   chain on the 4N lake (gold's fit)",
    INCREMENTAL_MEMORY: "8. chain after +increment, 4N lake",
    DATA_DOCS: "9. gate's GX side, a full Data Docs volume",
}
CHAINS = (CHAIN, NOOP, INCREMENTAL, INCREMENTAL_WARM, CHAIN_MEMORY, INCREMENTAL_MEMORY)


def measurements_table(measurements: Mapping[str, Mapping]) -> str:
    rows = []
    for name, label in MEASUREMENT_LABELS.items():
        m = measurements.get(name)
        if m is None:
            continue
        if "error" in m:
            rows.append([label, None, None, None, f"FAILED: {m['error'][:60]}"])
            continue
        note = ""
        if name in CHAINS:
            note = ", ".join(f"{k} {v:.1f} s" for k, v in m["stages"].items())
        elif name in (NOOP_PER_STAGE, NOOP_ONE_APP):
            rows.append([label, None, m.get("process_seconds"), None, "whole processes, JVM start included"])
            continue
        elif name in (SILVER, SILVER_MEMORY, SILVER_OTHER):
            note = f"{m.get('runtime')}, inference pass {_fmt(m.get('inference_images_per_s'))} images/s"
        elif name == REFERENCE:
            note = f"{m.get('models_built')} models built"
        elif name == DATA_DOCS:
            note = "runs held: " + ", ".join(f"{r['runs_held']:,} {r['gate_gx_seconds']:.2f} s" for r in m.get("runs", []))
        rows.append([label, m.get("images"), m.get("seconds"), m.get("images_per_s"), note])
    return render_table(["measurement", "images", "seconds", "images/s", "notes"], rows)


def ratios_table(rows: Sequence[Ratio]) -> str:
    return render_table(
        ["ratio", "value", "target", "status"],
        [[r.name, r.value, (f"{r.comparison} {r.target}" if r.target is not None else None), r.status] for r in rows],
    )


MEMORY_FIELDS = (
    ("python_driver_rss_mib", "Python driver RSS"),
    ("jvm_rss_mib", "JVM RSS"),
    ("jvm_heap_used_mib", "JVM heap in use"),
    ("jvm_heap_after_gc_mib", "JVM heap after GC"),
    ("worker_max_rss_mib", "largest Python worker RSS"),
    ("workers_pss_sum_mib", "Python workers, PSS sum"),
)


def memory_table(measurements: Mapping[str, Mapping], images: int, memory_images: int) -> str:
    small = (measurements.get(SILVER) or {}).get("memory") or {}
    large = (measurements.get(SILVER_MEMORY) or {}).get("memory") or {}
    rows = [[label, small.get(key), large.get(key), _divide(large.get(key), small.get(key))] for key, label in MEMORY_FIELDS]
    return render_table(["silver peak (MiB)", f"N = {images}", f"{memory_images}", "ratio"], rows)


def sweep_rows(points: Sequence[Mapping], limit_rate: float | None) -> list[list]:
    return [
        [p["setting"], p.get("images_per_s"), p.get("inference_images_per_s"), _divide(p.get("images_per_s"), limit_rate),
         p.get("error", "")[:60] if p.get("error") else ""]
        for p in points
    ]


def best_per_key(points: Sequence[Mapping]) -> dict[str, str]:
    """For each swept key, the `key=value` with the highest silver job images/s."""
    best: dict[str, Mapping] = {}
    for point in points:
        if point.get("images_per_s") is None:
            continue
        key = point["setting"].split("=", 1)[0]
        if key not in best or point["images_per_s"] > best[key]["images_per_s"]:
            best[key] = point
    return {key: point["setting"] for key, point in best.items()}
