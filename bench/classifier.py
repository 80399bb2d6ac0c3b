"""`python -m bench.classifier`: the measured comparison behind the classifier's settings.

    python -m bench.classifier [--conf conf/local.yaml] [--set key=value ...]

On the gold table of the lake the conf names (after `make run` on the sample: every image, the
current PCA model), each candidate is trained on gold's Training rows and scored on its Test rows,
as the classifier stage trains its model (pipelines/classifier.py: the same label order, features
and estimator). Candidates:
- multinomial logistic regression with each L2 regularisation of `bench.classifier_reg_params`,
  and an elastic-net variant (half L1) at the regularisation of `classifier.reg_params`' middle value;
- the same regression on the first 64 and 128 components only (is all of k needed?);
- a random forest (Spark ML, 100 trees), the usual non-linear baseline.
For each: Test accuracy, macro-F1 and the training time (wall clock, on whatever else the machine
runs: the JSON records the load average). docs/classifier.md quotes the results.
Results: printed, and written to `bench.results_dir`/classifier-<timestamp>.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.ml.classification import LogisticRegression, RandomForestClassifier
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bench.machine import describe_machine
from pipelines import classifier, scores
from pipelines.options import load_stage_conf, stage_parser
from pipelines.session import build_spark_session
from pipelines.layout import Layout


def candidates(conf) -> list[tuple[str, int | None, object]]:
    """(name, components used or None for all, estimator)."""
    regs = conf["bench.classifier_reg_params"]
    middle = sorted(conf["classifier.reg_params"])[len(conf["classifier.reg_params"]) // 2]
    lr = lambda reg, net=0.0: LogisticRegression(  # noqa: E731
        featuresCol="x", labelCol="y", family="multinomial", regParam=reg, elasticNetParam=net, maxIter=conf["classifier.max_iter"]
    )
    chosen = [(f"logistic regression, reg {reg:g}", None, lr(reg)) for reg in regs]
    chosen.append((f"logistic regression, reg {middle:g}, elastic net 0.5", None, lr(middle, 0.5)))
    chosen += [(f"logistic regression, reg {middle:g}, first {n} components", n, lr(middle)) for n in (64, 128)]
    chosen.append(("random forest, 100 trees, depth 12", None, RandomForestClassifier(featuresCol="x", labelCol="y", numTrees=100, maxDepth=12, seed=7)))
    return chosen


def evaluate(rows: DataFrame, labels: list[str], name: str, components: int | None, estimator) -> dict:
    pca = F.slice("pca", 1, components) if components else F.col("pca")
    frame = rows.withColumn("x", array_to_vector(pca)).cache()
    training, test = frame.where(F.col("split") == "Training"), frame.where(F.col("split") == "Test")
    started = time.monotonic()
    model = estimator.fit(training)
    seconds = time.monotonic() - started
    predicted = model.transform(test).withColumn(
        "predicted", F.element_at(F.array(*[F.lit(label) for label in labels]), F.col("prediction").cast("int") + 1)
    )
    counts = [(r["label"], r["predicted"], r["count"]) for r in predicted.groupBy("label", "predicted").count().collect()]
    result = scores.evaluate(counts)
    frame.unpersist()
    return {"candidate": name, "components": components, "test_accuracy": result.accuracy, "test_macro_f1": result.macro_f1,
            "test_rows": result.test_rows, "train_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    conf = load_stage_conf(args)
    spark = build_spark_session(conf, "bench-classifier")
    gold = Layout.from_conf(conf).read(spark, "gold")
    if gold is None or gold.where(F.col("split") == "Test").isEmpty():
        print(f"bench.classifier: gold under {conf.path('lake.root')} has no Test rows: run `make run` first", file=sys.stderr)
        return 2
    labels = sorted(r[0] for r in gold.where(F.col("split") == "Training").select("label").distinct().collect())
    # The label's metadata says how many classes there are (the random forest needs it).
    nominal = {"ml_attr": {"type": "nominal", "num_vals": len(labels), "name": "y"}}
    rows = (
        classifier.with_label_index(gold, labels)
        .withColumn("y", F.col(classifier.LABEL_INDEX).alias("y", metadata=nominal))
        .where(F.col("y") >= 0)
        .cache()
    )
    k = len(gold.first()["pca"])
    results = []
    for name, components, estimator in candidates(conf):
        if components is not None and components >= k:
            continue
        result = evaluate(rows, labels, name, components, estimator)
        results.append(result)
        print(f"{name:58s} accuracy {result['test_accuracy']:.4f}  macro-F1 {result['test_macro_f1']:.4f}  train {result['train_seconds']:6.1f} s", flush=True)
    report = {
        "measured_at": datetime.now(timezone.utc).isoformat(), "lake": conf.path("lake.root"), "k": k, "labels": len(labels),
        "training_rows": rows.where(F.col("split") == "Training").count(), "test_rows": results[0]["test_rows"] if results else 0,
        "load_average": os.getloadavg(), "machine": describe_machine(), "results": results,
    }
    folder = Path(conf.path("bench.results_dir"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"classifier-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.write_text(json.dumps(report, indent=1))
    print(f"bench.classifier: {len(results)} candidates on {report['training_rows']} Training and {report['test_rows']} Test rows (k={k}); {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
