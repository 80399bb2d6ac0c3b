"""Fixtures of the prediction tests: the feature model (real MobileNetV2 weights, silver's runtime,
built once) and a lake holding real sample photos and a published classifier (tests/serving/lakes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.config import Conf, load_conf
from tests.serving.lakes import build_lake

# Visually distinct fruits: the lake's classifier separates them from 6 photos each.
SERVED_LABELS = ("Banana", "Kiwi", "Lemon", "Blueberry", "Eggplant", "Pineapple", "Raspberry", "Avocado")
TRAINING_PER_LABEL = 6
SERVED_K = 12


def prediction_conf(lake_root: Path, weights_seed: Path, *overrides: str) -> Conf:
    """conf/local.yaml with this lake, the weights seed the suite found, and the given overrides."""
    return load_conf(["conf/local.yaml"], [f"lake.root={lake_root}", f"silver.model_seed_dir={weights_seed}", *overrides])


@pytest.fixture(scope="session")
def feature_model(weights_seed, tmp_path_factory):
    """MobileNetV2 in silver's configured runtime, as the predictor builds it (TensorFlow started once)."""
    from pipelines.lakefiles import LakeFiles
    from pipelines.predict import FeatureModel
    from pipelines.silver import runtime

    conf = prediction_conf(tmp_path_factory.mktemp("features") / "lake", weights_seed)
    return FeatureModel(conf, runtime(conf), LakeFiles(conf))


@dataclass
class ServedLake:
    conf: Conf
    predictor: object
    facts: dict
    training: list[Path]
    test_photos: dict[str, Path]


@pytest.fixture(scope="session")
def served_lake(feature_model, sample, weights_seed, tmp_path_factory) -> ServedLake:
    """A lake of 6 Training photos of each SERVED_LABELS fruit with its classifier published, and one
    Test photo per fruit (never in the lake) to ask about."""
    from pipelines.predict import Predictor

    conf = prediction_conf(tmp_path_factory.mktemp("served") / "lake", weights_seed)
    training = [p for label in SERVED_LABELS for p in sorted((sample / "Training" / label).glob("*.jpg"))[:TRAINING_PER_LABEL]]
    facts = build_lake(conf, feature_model, training, SERVED_K)
    test_photos = {label: sorted((sample / "Test" / label).glob("*.jpg"))[0] for label in SERVED_LABELS}
    return ServedLake(conf, Predictor.load(conf, model=feature_model), facts, training, test_photos)
