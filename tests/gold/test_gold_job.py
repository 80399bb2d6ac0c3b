"""Gold end to end on synthetic silver Delta tables in temporary lakes, checked against NumPy."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCAModel, StandardScalerModel, VectorSlicer
from pyspark.sql import functions as F

from pipelines import exports, gold, gold_model, lake, lakefs
from pipelines.config import ConfError, load_conf
from pipelines.layout import Layout
from tests.gold.conftest import LABELS, append_silver, low_rank_features, silver_records

pytestmark = pytest.mark.spark

ROWS, DIM, RANK = 48, 24, 4


def numpy_pca(features: np.ndarray, standardize: bool = False):
    """Reference: explained-variance ratios and component scores of the centered features, by SVD."""
    x = features.astype(np.float64)
    centered = x - x.mean(axis=0)
    if standardize:
        centered = centered / x.std(axis=0, ddof=1)  # Spark's StandardScaler uses the sample std
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    variances = singular**2
    return variances / variances.sum(), centered @ vt.T, vt.T


def gold_matrix(spark, conf) -> pd.DataFrame:
    return spark.read.format("delta").load(Layout.from_conf(conf).location("gold")).orderBy("image_id").toPandas()


def assert_equal_up_to_sign(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Columns equal up to one sign each (an eigenvector's sign is arbitrary); returns the signs."""
    signs = np.sign(np.sum(actual * expected, axis=0))
    np.testing.assert_allclose(actual * signs, expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())
    return signs


def table_version(spark, location: str) -> int:
    return DeltaTable.forPath(spark, location).history(1).first()["version"]


def csv_parts(conf) -> dict[tuple[str, str], Path]:
    """The CSV export's part files by (model_version, run_id), as a plain-file consumer finds them."""
    root = Path(exports.roots(conf)["csv"])
    name = conf["gold.export_csv_name"]
    return {
        (exports._partition_value(str(f.parent.parent), "model_version"), exports._partition_value(str(f.parent), "run_id")): f
        for f in root.glob(f"model_version=*/run_id=*/{name}")
    }


def read_exports(spark, conf) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Parquet export read by Spark, CSV export read by pandas part by part), both sorted by image_id."""
    parquet = spark.read.parquet(exports.roots(conf)["parquet"]).orderBy("image_id").toPandas()
    frames = [
        pd.read_csv(f, dtype={"image_id": str, "label": str, "split": str}, float_precision="round_trip").assign(
            model_version=version, run_id=run
        )
        for (version, run), f in csv_parts(conf).items()
    ]
    csv = pd.concat(frames).sort_values("image_id").reset_index(drop=True) if frames else pd.DataFrame()
    return parquet, csv


def assert_exports_equal_gold(spark, conf, k: int) -> None:
    """Both exports hold gold's rows exactly once each, with gold's components, model version and run."""
    matrix = gold_matrix(spark, conf)
    components = [f"pc_{i}" for i in range(1, k + 1)]
    for exported in read_exports(spark, conf):
        assert exported["image_id"].tolist() == matrix["image_id"].tolist()  # no row missing, none twice
        assert exported[["label", "split", "model_version", "run_id"]].equals(matrix[["label", "split", "model_version", "run_id"]])
        np.testing.assert_array_equal(exported[components].to_numpy(), np.stack(matrix["pca"]))


def files_and_times(*roots: str) -> dict[str, int]:
    """Every file under the folders with its modification time (ns): what a run wrote shows here."""
    return {str(p): p.stat().st_mtime_ns for root in roots for p in Path(root).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory):
    """One first gold run (a fit) over 48 silver rows of 24 features with rank-4 structure."""
    root = tmp_path_factory.mktemp("gold-fitted")
    conf = load_conf(["conf/local.yaml"], [f"lake.root={root / 'lake'}", "spark.shuffle_partitions=2"])
    features = low_rank_features(ROWS, DIM, RANK, seed=7)
    append_silver(spark, conf, silver_records(features))
    stats = gold.run(spark, conf, "fit-run")
    return conf, features, stats


def test_first_run_fits_and_reports_k_variance_and_target(fitted):
    conf, features, stats = fitted
    ratios, _, _ = numpy_pca(features)
    expected_k = int(np.argmax(np.cumsum(ratios) >= 0.95)) + 1
    assert expected_k == 3  # the fixture's structure: scales 8, 4, 2, 1 on four directions
    assert stats.mode == "fit"
    assert (stats.k, stats.k_fitted, stats.feature_dim, stats.fit_rows) == (expected_k, DIM, DIM, ROWS)
    assert stats.variance_target == 0.95 and stats.fixed_k is None
    assert stats.variance_reached == pytest.approx(np.cumsum(ratios)[expected_k - 1], rel=1e-6)
    assert (stats.rows_written, stats.gold_rows, stats.rejected) == (ROWS, ROWS, 0)
    assert stats.refit_reasons == []
    line = gold.summary_line(stats, "fit-run")
    assert f"k={expected_k} of {DIM} features" in line and "target 0.95" in line and "gold rows 48" in line


def test_explained_variance_equals_numpy_svd(spark, fitted):
    conf, features, stats = fitted
    ratios, _, _ = numpy_pca(features)
    variance = (
        spark.read.format("delta").load(Layout.from_conf(conf).location("gold_variance"))
        .where(F.col("model_version") == stats.model_version).orderBy("component").toPandas()
    )
    assert variance["component"].tolist() == list(range(1, DIM + 1))
    np.testing.assert_allclose(variance["explained_variance_ratio"], ratios, rtol=1e-6)
    np.testing.assert_allclose(variance["cumulative"], np.cumsum(ratios), rtol=1e-6)


def test_gold_holds_centered_component_scores_equal_to_numpy_up_to_sign(spark, fitted):
    conf, features, stats = fitted
    _, scores, _ = numpy_pca(features)
    matrix = gold_matrix(spark, conf)
    assert matrix.columns.tolist() == ["image_id", "label", "split", "pca", "model_version", "run_id"]
    assert matrix["image_id"].tolist() == [f"img{i:05d}" for i in range(ROWS)]
    assert set(matrix["model_version"]) == {stats.model_version} and set(matrix["run_id"]) == {"fit-run"}
    pca = np.stack(matrix["pca"].to_numpy())
    assert pca.shape == (ROWS, stats.k)
    assert_equal_up_to_sign(pca, scores[:, : stats.k])
    np.testing.assert_allclose(pca.mean(axis=0), 0.0, atol=1e-9)  # centered, unlike Spark's bare PCA


def test_model_is_saved_under_the_lake_and_registered(spark, fitted):
    conf, _, stats = fitted
    model = PipelineModel.load(Layout.from_conf(conf).pca_model(stats.model_version))
    scaler, pca, slicer = model.stages
    assert isinstance(scaler, StandardScalerModel) and scaler.getWithMean() and not scaler.getWithStd()
    assert isinstance(pca, PCAModel) and pca.pc.numRows == DIM and pca.pc.numCols == DIM
    assert isinstance(slicer, VectorSlicer) and slicer.getIndices() == list(range(stats.k))
    [record] = spark.read.format("delta").load(Layout.from_conf(conf).location("pca_registry")).collect()
    assert record["model_version"] == stats.model_version
    assert (record["fit_rows"], record["k"], record["feature_dim"]) == (ROWS, stats.k, DIM)
    assert sorted(record["fit_labels"]) == sorted(LABELS)


def test_csv_export_is_one_part_of_the_fit_that_parses_back_to_the_gold_matrix(spark, fitted):
    conf, _, stats = fitted
    k = stats.k
    assert stats.exports["written"] == [f"{stats.model_version}/fit-run"]
    [(key, part)] = csv_parts(conf).items()
    assert key == (stats.model_version, "fit-run")
    assert part.read_text().splitlines()[0] == ",".join(["image_id", "label", "split", "path", *[f"pc_{i}" for i in range(1, k + 1)]])
    exported = pd.read_csv(part, dtype={"label": str})
    assert 'Lemon, "Meyer"' in set(exported["label"])
    assert [p.name for p in part.parent.iterdir() if not p.name.startswith(".")] == [conf["gold.export_csv_name"]]
    assert_exports_equal_gold(spark, conf, k)


def test_parquet_export_is_read_whole_by_spark_and_pandas(spark, fitted):
    conf, _, stats = fitted
    by_spark, _ = read_exports(spark, conf)
    by_pandas = pd.read_parquet(stats.exports["parquet"]).sort_values("image_id").reset_index(drop=True)
    assert by_pandas["image_id"].tolist() == by_spark["image_id"].tolist()
    assert set(by_pandas["model_version"].astype(str)) == {stats.model_version}
    assert set(by_pandas["run_id"].astype(str)) == {"fit-run"}


def test_plots_are_written_beside_the_reports(fitted):
    conf, _, stats = fitted
    reports = Layout.from_conf(conf).reports("gold", "fit-run")
    assert stats.plots == {
        "variance": f"{reports}/cumulative_variance.png",
        "scatter": f"{reports}/pc1_pc2_scatter.png",
    }
    for path in stats.plots.values():
        with open(path, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_incremental_runs_project_new_rows_then_refit_rewrites_everything(spark, make_conf, monkeypatch):
    conf = make_conf(None)
    first = low_rank_features(ROWS, DIM, RANK, seed=7)
    append_silver(spark, conf, silver_records(first))
    fit = gold.run(spark, conf, "run-1")
    gold_location = Layout.from_conf(conf).location("gold")
    _, _, components = numpy_pca(first)
    signs = assert_equal_up_to_sign(np.stack(gold_matrix(spark, conf)["pca"]), numpy_pca(first)[1][:, : fit.k])

    # New images (same structure) plus one of each kind of bad row.
    new = low_rank_features(10, DIM, RANK, seed=8)
    bad = silver_records([np.zeros(5, np.float32), None, np.full(DIM, np.nan, np.float32)], start=500)
    append_silver(spark, conf, silver_records(new, start=ROWS) + bad)
    # The run stops right after its gold commit, before its export (lake's fault point): nothing of
    # it is exported; its rerun (same run id) has nothing new to project and writes the export part.
    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "gold:raise")
    with pytest.raises(lake.InjectedFault):
        gold.run(spark, conf, "run-2")
    monkeypatch.delenv(lake.FAULT_AFTER_PUBLISH_ENV)
    assert set(csv_parts(conf)) == {(fit.model_version, "run-1")}
    second = gold.run(spark, conf, "run-2")
    assert second.mode == "incremental" and second.model_version == fit.model_version
    assert (second.rows_written, second.rejected, second.gold_rows) == (10, 3, ROWS + 10)
    matrix = gold_matrix(spark, conf)
    assert set(matrix["model_version"]) == {fit.model_version}
    projected = np.stack(matrix[matrix["run_id"] == "run-2"]["pca"])
    expected = (new.astype(np.float64) - first.astype(np.float64).mean(axis=0)) @ components[:, : fit.k]
    np.testing.assert_allclose(projected * signs, expected, rtol=1e-7, atol=1e-9)
    quarantine = spark.read.format("delta").load(Layout.from_conf(conf).location("quarantine")).toPandas()
    assert sorted(quarantine["reason"].str.split(":").str[0]) == ["no_features", "non_finite", "wrong_dimension"]
    assert set(quarantine["stage"]) == {"gold"}

    # The increment added one export part, its own rows; the fit's part and the plots stayed as they were.
    assert second.exports["written"] == [f"{fit.model_version}/run-2"] and second.exports["removed"] == []
    assert set(csv_parts(conf)) == {(fit.model_version, "run-1"), (fit.model_version, "run-2")}
    assert len(pd.read_csv(csv_parts(conf)[(fit.model_version, "run-2")])) == 10
    assert second.plots == fit.plots
    assert_exports_equal_gold(spark, conf, fit.k)

    # A run killed after its gold commit, in the middle of its export (the Parquet part without its
    # _SUCCESS, no CSV file), with files of the old whole-matrix layout beside: the next run, which
    # has nothing new, completes the part, deletes the old files and leaves the other part alone.
    roots = exports.roots(conf)
    crashed = {kind: exports.part_folder(root, fit.model_version, "run-2") for kind, root in roots.items()}
    os.remove(f"{crashed['parquet']}/_SUCCESS")
    os.remove(f"{crashed['csv']}/{conf['gold.export_csv_name']}")
    Path(roots["csv"], conf["gold.export_csv_name"]).write_text("image_id\nold\n")
    Path(roots["parquet"], "part-00000-old.parquet").write_bytes(b"old")
    untouched = files_and_times(exports.part_folder(roots["parquet"], fit.model_version, "run-1"))
    resumed = gold.run(spark, conf, "run-2b")
    assert resumed.rows_written == 0 and resumed.exports["written"] == [f"{fit.model_version}/run-2"]
    assert sorted(Path(p).name for p in resumed.exports["removed"]) == [conf["gold.export_csv_name"], "part-00000-old.parquet"]
    assert files_and_times(exports.part_folder(roots["parquet"], fit.model_version, "run-1")) == untouched
    assert_exports_equal_gold(spark, conf, fit.k)

    # A rerun with nothing new commits nothing and writes nothing: no table, export or plot changes.
    versions = {t: table_version(spark, Layout.from_conf(conf).location(t)) for t in ("gold", "quarantine", "gold_variance")}
    written = files_and_times(*roots.values(), Layout.from_conf(conf).reports("gold"))
    third = gold.run(spark, conf, "run-3")
    assert (third.rows_written, third.rejected, third.gold_rows) == (0, 0, ROWS + 10)
    assert {t: table_version(spark, Layout.from_conf(conf).location(t)) for t in versions} == versions
    assert (third.exports["written"], third.exports["removed"]) == ([], [])
    assert files_and_times(*roots.values(), Layout.from_conf(conf).reports("gold")) == written

    # Rows projected since the fit (10 of 48) exceed refit_fraction=0.1: a refit is recommended...
    recommended = gold.run(spark, conf.with_overrides(["gold.refit_fraction=0.1"]), "run-4")
    assert len(recommended.refit_reasons) == 1 and "10 rows projected" in recommended.refit_reasons[0]

    # ... and --refit fits all valid rows, rewriting gold in one commit with a new version.
    before = table_version(spark, gold_location)
    refit = gold.run(spark, conf, "run-5", refit=True)
    assert refit.mode == "refit" and refit.model_version != fit.model_version
    assert (refit.fit_rows, refit.rows_written, refit.gold_rows, refit.rejected) == (ROWS + 10, ROWS + 10, ROWS + 10, 0)
    assert table_version(spark, gold_location) == before + 1
    last = DeltaTable.forPath(spark, gold_location).history(1).first()
    assert last["operation"] == "WRITE" and last["operationParameters"]["mode"] == "Overwrite"
    matrix = gold_matrix(spark, conf)
    assert set(matrix["model_version"]) == {refit.model_version} and set(matrix["run_id"]) == {"run-5"}
    everything = np.concatenate([first, new])
    assert_equal_up_to_sign(np.stack(matrix["pca"]), numpy_pca(everything)[1][:, : refit.k])
    # The refit's exports: one part of the new version, the old version's folders gone; new plots.
    assert set(csv_parts(conf)) == {(refit.model_version, "run-5")}
    assert [Path(p).name for p in refit.exports["removed"]] == [f"model_version={fit.model_version}"] * 2
    assert_exports_equal_gold(spark, conf, refit.k)
    assert refit.plots["variance"].endswith("/gold/run-5/cumulative_variance.png")
    registry = spark.read.format("delta").load(Layout.from_conf(conf).location("pca_registry"))
    assert sorted(r["model_version"] for r in registry.collect()) == sorted([fit.model_version, refit.model_version])

    # A gold table whose model folder is gone is refused with the way out, not silently refitted.
    shutil.rmtree(Layout.from_conf(conf).pca_model(refit.model_version))
    with pytest.raises(gold_model.GoldStateError, match="--refit"):
        gold.run(spark, conf, "run-6")


def test_the_audit_sees_every_staged_table_of_the_fit_and_a_failure_publishes_nothing(spark, silver_lake):
    """A fit stages its registry row, variance rows, gold rows and rejections, and audits them
    together: the gate's facts come from the staged variance rows (none is published before the
    audit), and a refused fit leaves no row in any table, its registry and variance included."""
    conf, _ = silver_lake()
    append_silver(spark, conf, silver_records([None], start=900))
    seen = {}

    def failing_audit(staged):
        batch = staged.batch
        [version] = [r[0] for r in batch.select("model_version").distinct().collect()]
        facts = gold.quality_facts(spark, conf, staged)
        seen.update(rows=batch.count(), quarantined=[r["image_id"] for r in staged.tables["quarantine"].collect()],
                    tables=list(staged.tables), registered=[r["model_version"] for r in staged.table("pca_registry").collect()],
                    facts=(facts.model_version == version, facts.array_length, facts.checks[0].value))
        raise RuntimeError("gate failed")

    with pytest.raises(RuntimeError, match="gate failed"):
        gold.run(spark, conf, "gated", audit=failing_audit)
    version = seen.pop("registered")[0]
    assert seen == {
        "rows": ROWS, "quarantined": ["img00900"], "tables": ["pca_registry", "gold_variance", "gold", "quarantine"],
        "facts": (True, 3, DIM),  # k=3 from the DIM staged variance rows of the batch's version
    }
    for table in ("gold", "gold_variance", "quarantine"):
        assert Layout.from_conf(conf).read(spark, table) is None, table
    assert Layout.from_conf(conf).read(spark, "pca_registry") is None
    # Only the model's files stay (an orphan folder: no registry row names it, nothing loads it).
    assert lakefs.exists(spark, Layout.from_conf(conf).pca_model(version))

    audited = []
    stats = gold.run(spark, conf, "gated-again", audit=lambda staged: audited.append(staged.batch.count()))
    assert audited == [ROWS] and (stats.gold_rows, stats.rejected) == (ROWS, 1)
    assert [r["model_version"] for r in Layout.from_conf(conf).read(spark, "pca_registry").collect()] == [stats.model_version]
    variance = Layout.from_conf(conf).read(spark, "gold_variance")
    assert {r[0] for r in variance.select("model_version").distinct().collect()} == {stats.model_version}


def test_a_fit_killed_between_its_commits_never_leaves_gold_rows_without_their_model(spark, silver_lake, monkeypatch):
    """The fit publishes its registry row, its variance rows, gold, then its rejections (the fault
    point stops it after any of them). Killed before gold: the next run fits again, the first fit's
    registry and variance rows stay unnamed by any gold row. Killed after gold: the model is found
    (registered, saved) and the next run is incremental, quarantining the rejected row again."""
    conf, _ = silver_lake()
    append_silver(spark, conf, silver_records([None], start=900))

    def registered():
        return sorted(r["model_version"] for r in Layout.from_conf(conf).read(spark, "pca_registry").collect())

    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "pca_registry:raise")
    with pytest.raises(lake.InjectedFault, match="after publishing pca_registry"):
        gold.run(spark, conf, "killed-1")
    [first] = registered()
    assert Layout.from_conf(conf).read(spark, "gold_variance") is None

    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "gold:raise")
    with pytest.raises(lake.InjectedFault, match="after publishing gold"):
        gold.run(spark, conf, "killed-2")
    [(version, rows)] = Layout.from_conf(conf).read(spark, "gold").groupBy("model_version").count().collect()
    assert rows == ROWS and version != first and registered() == sorted([first, version])
    variance = Layout.from_conf(conf).read(spark, "gold_variance")
    assert variance.where(F.col("model_version") == version).count() == DIM
    assert Layout.from_conf(conf).read(spark, "quarantine") is None

    monkeypatch.delenv(lake.FAULT_AFTER_PUBLISH_ENV)
    stats = gold.run(spark, conf, "after-kills")
    assert (stats.mode, stats.model_version, stats.rows_written, stats.rejected) == ("incremental", version, 0, 1)


def test_fixed_k_and_standardized_features(spark, silver_lake):
    conf, features = silver_lake("gold.k=2", "gold.standardize=true")
    stats = gold.run(spark, conf, "fixed")
    ratios, scores, _ = numpy_pca(features, standardize=True)
    assert (stats.k, stats.k_fitted, stats.fixed_k, stats.variance_target) == (2, 2, 2, None)
    assert stats.variance_reached == pytest.approx(ratios[:2].sum(), rel=1e-6)
    assert "fixed k 2" in gold.summary_line(stats, "fixed")
    assert_equal_up_to_sign(np.stack(gold_matrix(spark, conf)["pca"]), scores[:, :2])


def test_max_k_caps_the_fit_and_k_when_the_target_is_out_of_reach(spark, silver_lake):
    conf, features = silver_lake("gold.max_k=2")
    stats = gold.run(spark, conf, "capped")
    ratios, _, _ = numpy_pca(features)
    assert (stats.k, stats.k_fitted) == (2, 2)
    assert stats.variance_reached == pytest.approx(ratios[:2].sum(), rel=1e-6) and stats.variance_reached < 0.95


def test_fixed_k_above_the_feature_count_names_the_setting(spark, silver_lake):
    conf, _ = silver_lake("gold.k=25")
    with pytest.raises(ConfError, match=r"gold\.k=25 exceeds the 24 features"):
        gold.run(spark, conf, "too-wide")


def test_fewer_than_two_valid_rows_fit_nothing_and_quarantine_the_rest(spark, make_conf):
    conf = make_conf(None)
    append_silver(spark, conf, silver_records([np.ones(4, np.float32), None]))
    stats = gold.run(spark, conf, "tiny")
    assert stats.k is None and stats.gold_rows == 0 and stats.rejected == 1
    assert "not fitted" in gold.summary_line(stats, "tiny")
    assert Layout.from_conf(conf).read(spark, "gold") is None


def test_missing_silver_table_names_it(spark, make_conf):
    conf = make_conf(None)
    with pytest.raises(FileNotFoundError, match="silver table .* does not exist"):
        gold.run(spark, conf, "no-silver")


def test_command_line_prints_one_summary_line(spark, fitted, capsys, tmp_path):
    # On a copy of the fitted lake: the module's lake stays as its fit left it, whatever the order.
    conf, _, _ = fitted
    lake_copy = tmp_path / "lake"
    shutil.copytree(conf.path("lake.root"), lake_copy)
    assert gold.main(["--set", f"lake.root={lake_copy}", "--set", "run.id=cli-run", "--set", "spark.shuffle_partitions=2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gold run cli-run: incremental, model ") and "written 0" in out[0]
