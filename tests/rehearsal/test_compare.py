"""The rehearsal's comparisons with the local run: they must not pass on NaN, empty or misshapen data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.config import load_conf
from rehearsal import compare, sample


def vectors(*rows):
    return {f"id{i}": np.asarray(row, dtype=np.float64) for i, row in enumerate(rows)}


def test_identical_features_differ_by_zero_and_a_changed_one_is_measured():
    want = vectors([1.0, 2.0], [3.0, 4.0])
    assert compare.feature_difference(want, want) == 0.0
    assert compare.feature_difference(vectors([1.0, 2.0], [3.0, 4.5]), want) == pytest.approx(0.5)


def test_a_nan_feature_never_passes():
    got = vectors([1e-9, math.nan], [3.0, 4.0])
    assert math.isnan(compare.feature_difference(got, vectors([0.0, 2.0], [3.0, 4.0])))


@pytest.mark.parametrize("function", [compare.feature_difference, compare.score_difference])
def test_empty_or_misshapen_data_is_refused(function):
    with pytest.raises(ValueError, match="no "):
        function({}, {})
    with pytest.raises(ValueError, match="image_ids"):
        function(vectors([1.0]), vectors([1.0], [2.0]))
    with pytest.raises(ValueError):
        function(vectors([1.0, 2.0]), vectors([1.0]))


def test_scores_are_compared_up_to_each_components_sign():
    want = vectors([1.0, 2.0], [-3.0, 4.0])
    flipped = vectors([-1.0, 2.0], [3.0, 4.0])  # the first component's sign flipped
    assert compare.score_difference(flipped, want) == 0.0
    assert compare.score_difference(vectors([-1.0, 2.0], [3.0, 4.4]), want) == pytest.approx(0.1)


def test_spread_takes_evenly_spaced_files_and_all_when_asked_for_more(tmp_path):
    files = [tmp_path / f"{i:02d}.jpg" for i in range(10)]
    assert sample.spread(files, 5) == files[::2]
    assert sample.spread(files, 0) == files and sample.spread(files, 50) == files


def test_the_tables_compared_are_those_of_the_stages_the_deployment_runs():
    """The classifier is not in aws.stages: its tables are in neither lake and must not be compared
    (they were, and the read-back failed on 'classifier: None rows on S3, None in the local run')."""
    tables = list(load_conf(["conf/local.yaml"])["lake.tables"])
    assert compare.tables_of(["bronze", "silver", "gold", "catalog"], tables) == [
        "bronze", "silver", "gold", "gold_variance", "quarantine"
    ]
    assert compare.tables_of(["bronze", "silver", "gold", "classifier", "catalog"], tables) == tables
    assert compare.tables_of(["bronze"], tables) == ["bronze", "quarantine"]
