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


# The chain-built lake: the Training and Test photos of each SERVED_LABELS fruit it ingests (the
# first Test photo of each stays out, to be asked about).
CHAIN_TRAINING, CHAIN_TEST = 8, 2


@pytest.fixture(scope="session")
def chain_lake(spark, feature_model, sample, weights_seed, tmp_path_factory) -> ServedLake:
    """A lake built by the chain itself, as `make run` builds it (`python -m pipelines.run` in this
    process): bronze, silver, gold and the classifier with its gate, on real sample photos. The
    gate's bar is lowered to classifier.min_accuracy=0.5: 8 Training photos per fruit train a model
    below the product's 0.9 (it is the path that is tested here, not the accuracy)."""
    import shutil

    from pipelines import run
    from pipelines.predict import Predictor

    root = tmp_path_factory.mktemp("chain")
    for label in SERVED_LABELS:
        for split, photos in (("Training", sorted((sample / "Training" / label).glob("*.jpg"))[:CHAIN_TRAINING]),
                              ("Test", sorted((sample / "Test" / label).glob("*.jpg"))[1:1 + CHAIN_TEST])):
            folder = root / "input" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for photo in photos:
                shutil.copy2(photo, folder / photo.name)
    settings = [
        f"input.path={root / 'input'}", f"lake.root={root / 'lake'}", f"silver.model_seed_dir={weights_seed}",
        "spark.master=local[2]", "spark.shuffle_partitions=2", "classifier.min_accuracy=0.5",
    ]
    assert run.main(["--conf", "conf/local.yaml", *(a for s in settings for a in ("--set", s)), "--no-report"]) == 0
    conf = load_conf(["conf/local.yaml"], settings)
    test_photos = {label: sorted((sample / "Test" / label).glob("*.jpg"))[0] for label in SERVED_LABELS}
    return ServedLake(conf, Predictor.load(conf, model=feature_model), {}, sorted((root / "input").rglob("*.jpg")), test_photos)
