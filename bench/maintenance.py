"""`python -m bench.maintenance`: what table maintenance buys after many small increments.

    python -m bench.maintenance [--conf conf/local.yaml] [--set key=value ...]

A fresh lake under `bench.work_dir`/maintenance-<timestamp> receives `bench.maintenance_increments`
increments of `bench.maintenance_images_per_increment` real sample photos each, written as the
stages write them (lake.publish: one insert-if-absent MERGE per table and increment) to bronze (the
photo's bytes), silver (1280 features) and gold (k components), with one quarantine row every
fifth increment. The rows' features and components are random: the bench measures files and
reads, not MobileNetV2 (running the real chain 50 times would take an hour on a 2-core machine,
and each increment would still add one file per table, as here). Then it measures, before and
after `pipelines.maintain` (OPTIMIZE and VACUUM with the conf's retention), the data files per
table (current version, and stored including old versions) and the time of a full read of gold
(median of 3: a fresh DataFrame each time, so Delta's snapshot and the file listing are included);
and, last, the files left by a VACUUM without retention (what an erasure with --vacuum does).
Timings are wall-clock on whatever else the machine runs (the JSON records the load average).
Results: printed, and written to `bench.results_dir`/maintenance-<timestamp>.json.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import erase, lake, lock, maintain
from pipelines.bronze import BRONZE_SCHEMA
from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import Conf
from pipelines.layout import Layout
from pipelines.session import build_spark_session

SILVER_SCHEMA = "image_id string, label string, split string, features array<float>, model_name string, model_weights_sha256 string, featurized_at timestamp, run_id string"
GOLD_SCHEMA = "image_id string, label string, split string, pca array<double>, model_version string, run_id string"
TABLES = ("bronze", "silver", "gold", "quarantine")
K = 40


def photos(conf: Conf, count: int) -> list[Path]:
    seed = Path(conf.path("input.seed_path") if conf["input.seed_path"] else conf.path("input.path"))
    files = sorted(seed.glob("Training/*/*.jpg"))
    random.Random(conf["bench.seed"]).shuffle(files)
    if len(files) < count:
        raise SystemExit(f"bench.maintenance: {count} photos needed under {seed}/Training, found {len(files)}")
    return files[:count]


def increment(spark: SparkSession, conf: Conf, n: int, batch: list[Path]) -> None:
    import hashlib

    now, run_id, generator = datetime.now(timezone.utc), f"increment-{n:03d}", random.Random(n)
    rows = []
    for path in batch:
        data = path.read_bytes()
        rows.append({"image_id": hashlib.sha256(data).hexdigest(), "path": f"Training/{path.parent.name}/{path.name}",
                     "label": path.parent.name, "split": "Training", "content": data, "size_bytes": len(data),
                     "source_size_bytes": len(data), "source_modified_at": now, "format": "JPEG", "width": 100,
                     "height": 100, "orientation": None, "ingested_at": now, "run_id": run_id})
    ids = [(r["image_id"], r["label"]) for r in rows]
    frames = {
        "bronze": (spark.createDataFrame(rows, BRONZE_SCHEMA), ("image_id",)),
        "silver": (spark.createDataFrame([(i, label, "Training", [generator.random() for _ in range(1280)], "mobilenet_v2",
                                           "0" * 64, now, run_id) for i, label in ids], SILVER_SCHEMA), ("image_id",)),
        "gold": (spark.createDataFrame([(i, label, "Training", [generator.gauss(0, 1) for _ in range(K)], "bench", run_id)
                                        for i, label in ids], GOLD_SCHEMA), ("image_id",)),
    }
    if n % 5 == 0:
        frames["quarantine"] = (spark.createDataFrame([(None, f"Training/Broken/{n}.jpg", "bronze", "decode_error: bench", 10, now, run_id, now)],
                                                      lake.QUARANTINE_SCHEMA), lake.QUARANTINE_KEYS)
    layout = Layout.from_conf(conf)
    for table, (frame, keys) in frames.items():
        lake.publish(spark, frame, layout.location(table), keys)


def gold_read_seconds(spark: SparkSession, conf: Conf) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        spark.read.format("delta").load(Layout.from_conf(conf).location("gold")).select(F.sum(F.aggregate("pca", F.lit(0.0), lambda a, x: a + x))).collect()
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings), 3)


def files(spark: SparkSession, conf: Conf) -> dict[str, dict[str, int]]:
    from delta.tables import DeltaTable

    layout = Layout.from_conf(conf)
    return {
        table: {"current": DeltaTable.forPath(spark, layout.location(table)).detail().first()["numFiles"],
                "stored": maintain.stored_files(spark, layout.location(table))}
        for table in TABLES
    }


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = load_stage_conf(args)
    root = Path(base.path("bench.work_dir")) / f"maintenance-{stamp}"
    conf = base.with_overrides([f"lake.root={root / 'lake'}"])
    spark = build_spark_session(conf, "bench-maintenance")
    count, per = conf["bench.maintenance_increments"], conf["bench.maintenance_images_per_increment"]
    selection = photos(conf, count * per)
    started = time.perf_counter()
    for n in range(count):
        increment(spark, conf, n, selection[n * per : (n + 1) * per])
    built = time.perf_counter() - started
    before = {"files": files(spark, conf), "gold_read_s": gold_read_seconds(spark, conf)}
    started = time.perf_counter()
    with lock.held(conf, "maintain", f"bench-{stamp}"):
        maintain.maintain(spark, conf, f"bench-{stamp}", list(TABLES))
    maintain_s = time.perf_counter() - started
    after = {"files": files(spark, conf), "gold_read_s": gold_read_seconds(spark, conf)}
    erase.vacuum_now(spark, conf, TABLES)
    floor = {table: maintain.stored_files(spark, Layout.from_conf(conf).location(table)) for table in TABLES}
    result = {"increments": count, "images_per_increment": per, "build_s": round(built, 1), "maintain_s": round(maintain_s, 1),
              "before": before, "after": after, "stored_after_zero_retention_vacuum": floor,
              "retention_hours": {t: conf[f"maintenance.retention_hours.{t}"] for t in TABLES}, "lake": str(root / "lake"),
              "load_average_1_5_15": [round(v, 1) for v in os.getloadavg()]}
    print(f"{count} increments of {per} photos in {built:.0f} s; maintain {maintain_s:.1f} s")
    print(f"{'table':<11}{'files before':>13}{'after':>7}{'stored before':>15}{'after':>7}{'after 0 h vacuum':>18}")
    for table in TABLES:
        b, a = before["files"][table], after["files"][table]
        print(f"{table:<11}{b['current']:>13}{a['current']:>7}{b['stored']:>15}{a['stored']:>7}{floor[table]:>18}")
    print(f"gold full read: {before['gold_read_s']} s before, {after['gold_read_s']} s after")
    out = Path(conf.path("bench.results_dir")) / f"maintenance-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
