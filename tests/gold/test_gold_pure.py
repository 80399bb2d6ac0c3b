"""Gold's pure helpers: choice of k (the fit's and the gate's), variance rows, model versions, refit policy, settings."""

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipelines.config import ConfError, load_conf
from pipelines.gold_model import (
    GoldSettings,
    changed_settings,
    k_and_variance,
    model_version_for,
    refit_reasons,
    select_pca_k,
    variance_problem,
    variance_records,
)


def test_select_pca_k_is_the_smallest_k_reaching_the_target():
    ratios = [0.5, 0.3, 0.15, 0.05]
    assert select_pca_k(ratios, 0.5) == 1
    assert select_pca_k(ratios, 0.51) == 2
    assert select_pca_k(ratios, 0.8) == 2
    assert select_pca_k(ratios, 0.95) == 3
    assert select_pca_k(ratios, 0.96) == 4


def test_select_pca_k_tolerates_float_rounding_at_the_target():
    ratios = [0.1] * 10  # cumulative sums 0.30000000000000004, ..., 0.9999999999999999
    assert np.cumsum(ratios)[-1] < 1.0
    assert select_pca_k(ratios, 1.0) == 10
    assert select_pca_k(ratios, 0.3) == 3


def test_select_pca_k_returns_all_components_when_the_target_is_out_of_reach():
    # A fit capped by gold.max_k may hold less than the target: k is then every fitted component.
    assert select_pca_k([0.4, 0.3, 0.1], 0.95) == 3


@pytest.mark.parametrize("ratios, target", [([], 0.9), ([0.5, 0.5], 0.0), ([0.5, 0.5], 1.2), ([[0.5], [0.5]], 0.9)])
def test_select_pca_k_rejects_bad_input(ratios, target):
    with pytest.raises(ValueError):
        select_pca_k(ratios, target)


def test_variance_records_number_components_from_one_with_cumulative_sums():
    rows = variance_records(np.array([0.6, 0.3, 0.1]), "v1")
    assert [r[0] for r in rows] == [1, 2, 3]
    assert [r[1] for r in rows] == [0.6, 0.3, 0.1]
    assert [r[2] for r in rows] == pytest.approx([0.6, 0.9, 1.0])
    assert {r[3] for r in rows} == {"v1"}
    assert all(type(value) in (int, float, str) for row in rows for value in row)


def test_model_version_is_utc_time_rows_and_a_hash_of_the_run_and_the_fingerprint():
    paris = timezone(timedelta(hours=1))
    version = model_version_for(datetime(2025, 3, 1, 13, 4, 5, tzinfo=paris), 6270, "run-1", "fit-set-a")
    assert version.startswith("20250301T120405Z-n6270-")
    assert len(version.rsplit("-", 1)[1]) == 8
    utc = datetime(2025, 3, 1, 12, 4, 5, tzinfo=timezone.utc)
    assert model_version_for(utc, 6270, "run-1", "fit-set-a") == version
    assert model_version_for(utc, 6270, "run-1", "fit-set-b") != version
    # two runs fitting the same rows in the same second (started at once) save distinct models
    assert model_version_for(utc, 6270, "run-2", "fit-set-a") != version


def test_refit_is_recommended_when_projected_rows_exceed_the_fraction_of_the_fit():
    assert refit_reasons(100, 125, 0.25, [], []) == []
    reasons = refit_reasons(100, 126, 0.25, [], [])
    assert len(reasons) == 1 and "26 rows projected since the fit on 100 rows" in reasons[0]


def test_refit_is_recommended_for_unseen_labels_and_feature_models():
    reasons = refit_reasons(100, 100, 0.25, ["Kiwi", "Apple", "C", "D", "E", "F"], ["b" * 64])
    assert "6 label(s) unseen at fit time (Apple, C, D, E, F, ...)" in reasons[0]
    assert "1 feature model(s) (weights or runtime)" in reasons[1]


def test_settings_changed_since_the_fit_are_named_and_recommend_a_refit():
    record = {"fixed_k": None, "variance_target": 0.95, "standardize": False}
    same = GoldSettings(variance_target=0.95, fixed_k=None, max_k=10, standardize=False, refit_fraction=0.5)
    assert changed_settings(record, same) == []
    moved = GoldSettings(variance_target=0.9, fixed_k=None, max_k=10, standardize=True, refit_fraction=0.5)
    assert changed_settings(record, moved) == ["gold.variance_target 0.95 -> 0.9", "gold.standardize False -> True"]
    fixed = GoldSettings(variance_target=0.9, fixed_k=12, max_k=10, standardize=False, refit_fraction=0.5)
    assert changed_settings(record, fixed) == ["gold.k None -> 12"]
    assert refit_reasons(10, 10, 0.5, [], [], ["gold.k None -> 12"]) == ["settings changed since the fit (gold.k None -> 12)"]


def test_gold_settings_defaults_follow_base_yaml():
    settings = GoldSettings.from_conf(load_conf(["conf/local.yaml"]))
    assert settings == GoldSettings(variance_target=0.95, fixed_k=None, max_k=1280, standardize=False, refit_fraction=0.25)


@pytest.mark.parametrize(
    "override, key",
    [
        ("gold.variance_target=0", "gold.variance_target"),
        ("gold.variance_target=1.5", "gold.variance_target"),
        ("gold.k=abc", "gold.k"),
        ("gold.k=0", "gold.k"),
        ("gold.k=true", "gold.k"),
        ("gold.max_k=0", "gold.max_k"),
        ("gold.refit_fraction=-0.1", "gold.refit_fraction"),
    ],
)
def test_gold_settings_name_the_setting_at_fault(override, key):
    with pytest.raises(ConfError, match=key.replace(".", r"\.")):
        GoldSettings.from_conf(load_conf(["conf/local.yaml"], [override]))


def test_variance_problem_names_zero_or_non_finite_variance_and_passes_a_usable_fit():
    assert variance_problem([0.5, 0.0, 2.0], [0.9, 0.1, 0.0]) is None
    assert "zero total variance" in variance_problem([0.0, 0.0], [float("nan"), float("nan")])
    assert "total variance of the features is inf" in variance_problem([1.0, float("inf")], [1.0, 0.0])
    assert "total variance of the features is nan" in variance_problem([float("nan"), 1.0], [1.0, 0.0])
    assert "not all finite numbers (1 of 2)" in variance_problem([1.0, 1.0], [1.0, float("nan")])


def test_the_gate_expects_the_smallest_k_reaching_the_target_or_the_fixed_k():
    ratios = [0.5, 0.3, 0.15, 0.05]
    k, reached = k_and_variance(ratios, None, 0.9)
    assert k == 3 and math.isclose(reached, 0.95)
    assert k_and_variance(ratios, 2, 0.9) == (2, 0.8)
    k, reached = k_and_variance([0.5, 0.3], None, 0.95)
    assert k == 2 and math.isclose(reached, 0.8)  # not reachable: all components, and the gate fails
