"""A gated lake built once for the quality tests: stages' batches go through lake.write_audit_publish
with the real auditor, in the order bronze (passes) -> silver bad batch (blocked) -> silver good
batch -> gold (passes) -> gold batch missing its variance target (blocked).

The facts each step leaves (exceptions, table contents, report output) are captured as they happen,
so each test asserts one of them without re-running GX (each gate takes seconds).
"""

from __future__ import annotations

import io
import random
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from pipelines import lake
from pipelines.bronze import BRONZE_SCHEMA
from pipelines.config import Conf, load_conf
from pipelines.layout import Layout
from quality import gates

SILVER_SCHEMA = (
    "image_id string, label string, split string, features array<float>, model_name string, "
    "model_weights_sha256 string, featurized_at timestamp, run_id string"
)
GOLD_SCHEMA = "image_id string, label string, split string, pca array<double>, model_version string, run_id string"
VARIANCE_SCHEMA = "component int, explained_variance_ratio double, cumulative double, model_version string"
IMAGE_IDS = [f"{i:064x}" for i in range(1, 7)]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def bronze_rows(spark, ids, run_id, overrides=None):
    rows = []
    for n, image_id in enumerate(ids):
        row = {
            "image_id": image_id, "path": f"Training/Apple Red 1/{n}_100.jpg", "label": "Apple Red 1",
            "split": "Training", "content": b"\xff\xd8 not decoded by the gate", "size_bytes": 27,
            "source_size_bytes": 27, "source_modified_at": NOW, "format": "JPEG", "width": 100, "height": 100,
            "orientation": None, "ingested_at": NOW, "run_id": run_id,
        }
        row.update((overrides or {}).get(n, {}))
        rows.append(row)
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def features(seed, length=1280):
    generator = random.Random(seed)
    return [generator.uniform(0.0, 6.0) for _ in range(length)]


def silver_rows(spark, rows, run_id):
    return spark.createDataFrame(
        [(i, "Apple Red 1", "Training", f, "mobilenet_v2", "0" * 64, NOW, run_id) for i, f in rows], SILVER_SCHEMA
    )


def gold_rows(spark, ids, k, version, run_id):
    return spark.createDataFrame(
        [(i, "Apple Red 1", "Training", [float(n + c) for c in range(k)], version, run_id) for n, i in enumerate(ids)],
        GOLD_SCHEMA,
    )


def publish_variance(spark, conf, ratios, version):
    cumulative = [sum(ratios[: n + 1]) for n in range(len(ratios))]
    rows = [(n + 1, r, c, version) for n, (r, c) in enumerate(zip(ratios, cumulative))]
    lake.publish(spark, spark.createDataFrame(rows, VARIANCE_SCHEMA), Layout.from_conf(conf).location("gold_variance"), ("model_version", "component"))


def gated_publish(spark, conf, layer, run_id, rows, quarantine=None, context=None):
    """What a stage does: stage its rows (and quarantine rows), audit with the gate, publish."""
    quarantine = quarantine if quarantine is not None else spark.createDataFrame([], lake.QUARANTINE_SCHEMA)
    return lake.write_audit_publish(
        spark, conf, layer, run_id,
        {"quarantine": lake.Batch(quarantine, lake.QUARANTINE_KEYS), layer: lake.Batch(rows, ("image_id",))},
        audit=gates.auditor(spark, conf, layer, run_id, context),
    )


def report_output(conf: Conf) -> str:
    from quality import report

    out = io.StringIO()
    with redirect_stdout(out):
        assert report.main(["--set", f"lake.root={conf['lake.root']}"]) == 0
    return out.getvalue()


def table_ids(spark, conf, table):
    rows = Layout.from_conf(conf).read(spark, table)
    return None if rows is None else sorted(r["image_id"] for r in rows.collect())


@dataclass
class GatedLake:
    conf: Conf
    bronze_published: dict
    silver_failure: gates.GateFailed
    silver_after_failure: list | None
    gold_refusal_after_failure: gates.UpstreamNotValidated
    report_after_failure: str
    silver_published: dict
    gold_published: dict
    gold_failure: gates.GateFailed
    gold_versions_after_failure: list[str]


def _refusal(spark, conf, layer):
    try:
        gates.require_upstream_passed(spark, conf, layer)
    except gates.UpstreamNotValidated as exc:
        return exc
    return None


@pytest.fixture(scope="package")
def gated_lake(spark, tmp_path_factory) -> GatedLake:
    root = tmp_path_factory.mktemp("gated")
    conf = load_conf(["conf/local.yaml"], [f"lake.root={root / 'lake'}", "spark.master=local[2]", "spark.shuffle_partitions=2"])

    bronze = gated_publish(spark, conf, "bronze", "bronze-run", bronze_rows(spark, IMAGE_IDS, "bronze-run"), context={"input": "test"})

    bad = [(i, features(n)) for n, i in enumerate(IMAGE_IDS[:4])]
    bad[1] = (IMAGE_IDS[1], [float("nan")] + features(1)[1:])  # NaN feature
    bad[2] = (IMAGE_IDS[2], features(2, length=1000))  # wrong vector length
    bad.append((IMAGE_IDS[0], features(9)))  # duplicate id
    with pytest.raises(gates.GateFailed) as silver_failure:
        gated_publish(spark, conf, "silver", "silver-bad-run", silver_rows(spark, bad, "silver-bad-run"))
    silver_after_failure = table_ids(spark, conf, "silver")
    refusal = _refusal(spark, conf, "gold")
    report_after_failure = report_output(conf)

    good = [(i, features(n)) for n, i in enumerate(IMAGE_IDS[:5])]
    decode_failure = spark.createDataFrame(
        [(IMAGE_IDS[5], "Training/Apple Red 1/5_100.jpg", "silver", "decode_error: test", 27, NOW, "silver-run", NOW)],
        lake.QUARANTINE_SCHEMA,
    )
    conf_tolerant = conf.with_overrides(["quality.silver.max_quarantine_rate=0.2"])
    silver = gated_publish(spark, conf_tolerant, "silver", "silver-run", silver_rows(spark, good, "silver-run"), decode_failure)
    assert _refusal(spark, conf, "gold") is None

    publish_variance(spark, conf, [0.6, 0.3, 0.07, 0.03], "pca-v1")
    gold = gated_publish(spark, conf, "gold", "gold-run", gold_rows(spark, IMAGE_IDS[:5], 3, "pca-v1", "gold-run"))

    publish_variance(spark, conf, [0.6, 0.3], "pca-v2")
    with pytest.raises(gates.GateFailed) as gold_failure:
        gated_publish(spark, conf, "gold", "gold-bad-run", gold_rows(spark, IMAGE_IDS[:5], 2, "pca-v2", "gold-bad-run"))

    return GatedLake(
        conf=conf,
        bronze_published={t: r.inserted_rows for t, r in bronze.items()},
        silver_failure=silver_failure.value,
        silver_after_failure=silver_after_failure,
        gold_refusal_after_failure=refusal,
        report_after_failure=report_after_failure,
        silver_published={t: r.inserted_rows for t, r in silver.items()},
        gold_published={t: r.inserted_rows for t, r in gold.items()},
        gold_failure=gold_failure.value,
        gold_versions_after_failure=sorted(
            r[0] for r in Layout.from_conf(conf).read(spark, "gold").select("model_version").distinct().collect()
        ),
    )
