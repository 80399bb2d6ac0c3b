"""The classifier stage on a lake whose silver holds synthetic features clustered by label: its
first training, runs with nothing new, increments, a gold refit, its gate, and the predictor
bundle that `python -m pipelines.predict` scores photos with (equal to the batch scores).

The tests from the first run to the refit share one lake (`trained`, built once for the module)
and run in the file's order, each going on from the state the previous one left: a lake costs a
gold fit and a training, about a minute on 2 cores. Every run gets few L-BFGS iterations
(`FAST`): the clusters are far apart, so a few iterations already separate them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import classifier, classifier_predictor, gold
from pipelines.config import Conf, load_conf
from pipelines.layout import Layout
from quality import outcomes
from tests.gold.conftest import append_silver, silver_records

pytestmark = pytest.mark.spark

LABELS = ("Apple", "Banana", "Kiwi", "Lemon")
DIM = 24
# Two candidates (the comparison still runs), few iterations.
FAST = ("classifier.reg_params=[0.0, 0.01]", "classifier.max_iter=15")


def clustered(rows: int, seed: int, spread: float, start: int) -> np.ndarray:
    """Features of rows labelled LABELS[(start + i) % 4] (silver_records' rule): each label's centre
    plus noise of `spread`; the centres are fixed, so new batches are new images of the same fruits."""
    centres = np.random.default_rng(99).uniform(0.0, 4.0, size=(len(LABELS), DIM))
    rng = np.random.default_rng(seed)
    labels = [(start + i) % len(LABELS) for i in range(rows)]
    return (centres[labels] + spread * rng.normal(size=(rows, DIM))).astype(np.float32)


def add_images(spark, conf: Conf, start: int, training: int, test: int, spread: float = 0.3, seed: int = 1) -> None:
    append_silver(spark, conf, silver_records(clustered(training, seed, spread, start), start=start, labels=LABELS))
    test_start = start + training
    append_silver(spark, conf, silver_records(clustered(test, seed + 1, spread, test_start), start=test_start, labels=LABELS, split="Test"))


def stage_args(conf: Conf, run_id: str, *more: str) -> list[str]:
    sets = [f"lake.root={conf['lake.root']}", f"run.id={run_id}", "spark.master=local[2]", "spark.shuffle_partitions=2", *FAST, *more]
    return ["--conf", "conf/local.yaml", *(a for s in sets for a in ("--set", s))]


def chain(conf: Conf, run_id: str, *more: str) -> tuple[int, int]:
    return gold.main(stage_args(conf, f"{run_id}-gold", *more)), classifier.main(stage_args(conf, run_id, *more))


def table_version(spark, conf: Conf, table: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, Layout.from_conf(conf).location(table)).history(1).first()["version"]


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory) -> tuple[Conf, str]:
    """The module's lake after its first gold and classifier runs, and what they printed."""
    import contextlib
    import io

    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path_factory.mktemp('classifier') / 'lake'}"])
    add_images(spark, conf, 0, training=80, test=24)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        codes = chain(conf, "first")
    assert codes == (0, 0), err.getvalue()[-3000:]
    return conf, out.getvalue()


@pytest.fixture
def trained(first_run) -> Conf:
    return first_run[0]


def test_the_first_run_trains_scores_every_gold_row_and_records_its_metrics(spark, first_run, trained):
    out = first_run[1]
    assert "classifier run first: trained (no model yet)" in out and "4 labels" in out
    rows = Layout.from_conf(trained).read(spark, "classifier")
    gold_rows = Layout.from_conf(trained).read(spark, "gold")
    assert rows.count() == gold_rows.count() == 104
    assert rows.select("model_version").distinct().count() == 1
    [metrics] = Layout.from_conf(trained).read(spark, "classifier_metrics").collect()
    assert metrics["labels"] == list(LABELS) and metrics["test_rows"] == 24 and metrics["test_accuracy"] == 1.0
    assert len(metrics["candidates"]) == 2 and metrics["validation_rows"] > 0
    assert metrics["train_rows"] + metrics["validation_rows"] == 80
    assert sum(cell["count"] for cell in metrics["confusion"]) == 24
    assert {c["label"]: c["support"] for c in metrics["classes"]} == {label: 6 for label in LABELS}
    last = outcomes.latest(spark, trained)["classifier"]
    assert last.success and last.run_id == "first"
    plot = Path(classifier_predictor.plot_location(trained, metrics["run_id"]))
    assert plot.is_file() and plot.stat().st_size > 10_000


def test_the_predictor_bundle_gives_the_batch_scores_without_spark(spark, trained):
    """pca = ((x - mean) / scale) @ components and softmax(coefficients @ pca + intercepts), from the
    bundle alone, equal gold's and the classifier's rows for the same features."""
    models = Path(Layout.from_conf(trained).classifier_models)
    version = json.loads((models / "current.json").read_text())["classifier_version"]
    description = json.loads((models / version / "predictor.json").read_text())
    arrays = np.load(models / version / "predictor.npz")
    assert description["labels"] == list(LABELS) and description["k"] == arrays["components"].shape[1]
    assert description["gold_model_version"] == Layout.from_conf(trained).read(spark, "gold").first()["model_version"]
    silver = {r["image_id"]: np.array(r["features"], dtype=np.float64) for r in Layout.from_conf(trained).read(spark, "silver").collect()}
    gold_rows = {r["image_id"]: np.array(r["pca"]) for r in Layout.from_conf(trained).read(spark, "gold").collect()}
    scored = {r["image_id"]: r for r in Layout.from_conf(trained).read(spark, "classifier").collect()}
    for image_id in sorted(silver)[:20]:
        pca = ((silver[image_id] - arrays["mean"]) / arrays["scale"]) @ arrays["components"]
        np.testing.assert_allclose(pca, gold_rows[image_id], atol=1e-9)
        margins = arrays["coefficients"] @ pca + arrays["intercepts"]
        probabilities = np.exp(margins - margins.max()) / np.exp(margins - margins.max()).sum()
        np.testing.assert_allclose(probabilities, scored[image_id]["probabilities"], atol=1e-9)
        assert scored[image_id]["prediction"] == description["labels"][int(np.argmax(probabilities))]


def test_nothing_new_changes_nothing_and_new_gold_rows_are_only_scored(spark, trained, capsys):
    capsys.readouterr()
    before = table_version(spark, trained, "classifier")
    [first_version] = [r[0] for r in Layout.from_conf(trained).read(spark, "classifier").select("model_version").distinct().collect()]
    assert chain(trained, "again") == (0, 0)  # gold and the classifier's tables as the last run left them
    assert "classifier run again: nothing new since run " in capsys.readouterr().out
    assert chain(trained, "looked", "run.skip_unchanged=false") == (0, 0)  # read in full: nothing to score
    assert "classifier run looked: unchanged" in capsys.readouterr().out
    assert table_version(spark, trained, "classifier") == before

    add_images(spark, trained, 104, training=8, test=4, seed=5)
    assert chain(trained, "more") == (0, 0)
    assert "classifier run more: incremental" in capsys.readouterr().out
    rows = Layout.from_conf(trained).read(spark, "classifier")
    assert rows.count() == 116 and [r[0] for r in rows.select("model_version").distinct().collect()] == [first_version]
    assert rows.where("run_id = 'more'").count() == 12
    assert Layout.from_conf(trained).read(spark, "classifier_metrics").count() == 1


def test_a_gold_refit_retrains_the_classifier_on_the_next_run(spark, trained, capsys):
    assert gold.main([*stage_args(trained, "refit-gold"), "--refit"]) == 0
    assert classifier.main(stage_args(trained, "after-refit")) == 0
    out = capsys.readouterr().out
    assert "classifier run after-refit: trained (gold was refitted" in out
    rows = Layout.from_conf(trained).read(spark, "classifier")
    gold_version = Layout.from_conf(trained).read(spark, "gold").first()["model_version"]
    assert [r[0] for r in rows.select("gold_model_version").distinct().collect()] == [gold_version]
    assert Layout.from_conf(trained).read(spark, "classifier_metrics").count() == 2
    [metrics] = Layout.from_conf(trained).read(spark, "classifier_metrics").where("run_id = 'after-refit'").collect()
    assert metrics["test_rows"] == 28 and metrics["test_accuracy"] == 1.0  # the increment's Test rows count now
    current = json.loads((Path(Layout.from_conf(trained).classifier_models) / "current.json").read_text())
    assert current["classifier_version"] == rows.first()["model_version"]


def test_the_gate_refuses_a_model_below_min_accuracy_or_blind_to_a_label_and_publishes_nothing(spark, make_conf, capsys):
    """One lake, both faults (one training run): clusters drowned in noise, so the Test accuracy is
    far below 0.99, and a Test-only label (Walnut) the model cannot predict."""
    conf = make_conf(None)
    add_images(spark, conf, 0, training=40, test=40, spread=6.0)
    append_silver(spark, conf, silver_records(clustered(4, 3, 0.3, 0), start=500, labels=("Walnut",), split="Test"))
    assert chain(conf, "refused", "classifier.min_accuracy=0.99") == (0, 1)
    err = capsys.readouterr().err
    assert "classifier quality gate failed for run refused" in err
    assert "on test_accuracy (min_value=0.99" in err and "on uncovered_labels (min_value=0, max_value=0)" in err, err[-3000:]
    assert "gold holds 1 label(s) in no Training image (Walnut)" in err  # the warning names it
    assert Layout.from_conf(conf).read(spark, "classifier") is None
    assert Layout.from_conf(conf).read(spark, "classifier_metrics") is None
    assert not (Path(Layout.from_conf(conf).classifier_models) / "current.json").exists()


def test_no_gold_yet_is_one_line_and_exit_2(make_conf, capsys):
    conf = make_conf(None)
    assert classifier.main(stage_args(conf, "empty")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("classifier: gold table") and "run `python -m pipelines.gold` first" in err
    assert len(err.splitlines()) == 1
