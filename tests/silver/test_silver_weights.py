"""Where the driver finds the MobileNetV2 weights, and the clear stop when there are none."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from pipelines import bronze, features, runtimes, silver
from pipelines.layout import Layout
from tests.conftest import MODEL_SEED, copy_sample


def settings(tmp_path, **changes) -> features.WeightsSettings:
    values = {
        "choice": "imagenet",
        "keras_home": str(tmp_path / "keras"),
        "seed_dir": str(tmp_path / "seed"),
        "weights_file": "",
        "weights_url": "https://example.invalid/keras-applications/mobilenet_v2/",
        "download": False,
    }
    return features.WeightsSettings(**{**values, **changes})


def test_no_weights_anywhere_names_keras_home_and_the_conf_keys(tmp_path):
    with pytest.raises(features.WeightsUnavailable) as error:
        features.locate_weights_file(settings(tmp_path))
    message = str(error.value)
    assert "KERAS_HOME" in message and str(tmp_path / "keras" / "models") in message
    assert "silver.keras_home" in message and "silver.model_seed_dir" in message
    assert "silver.weights_file" in message and "silver.download=false" in message


def test_failed_download_is_part_of_the_message(tmp_path):
    with pytest.raises(features.WeightsUnavailable) as error:
        features.locate_weights_file(settings(tmp_path, download=True))
    assert "download from https://example.invalid/" in str(error.value)


def test_seed_copy_is_copied_into_the_keras_cache_then_found_there(tmp_path):
    seed = tmp_path / "seed" / features.WEIGHTS_FILE_NAME
    seed.parent.mkdir()
    seed.write_bytes(b"weights bytes")
    path, source = features.locate_weights_file(settings(tmp_path))
    assert path == tmp_path / "keras" / "models" / features.WEIGHTS_FILE_NAME
    assert path.read_bytes() == b"weights bytes" and source.startswith("seed")
    seed.unlink()
    path_again, source_again = features.locate_weights_file(settings(tmp_path))
    assert path_again == path and source_again.startswith("Keras cache")


def test_explicit_weights_file_wins_and_a_wrong_one_is_named(tmp_path):
    explicit = tmp_path / "my.h5"
    explicit.write_bytes(b"x")
    assert features.locate_weights_file(settings(tmp_path, weights_file=str(explicit)))[0] == explicit
    with pytest.raises(features.WeightsUnavailable, match="silver.weights_file='.*missing.h5' does not exist"):
        features.locate_weights_file(settings(tmp_path, weights_file=str(tmp_path / "missing.h5")))


def test_a_corrupt_weights_file_is_named(tmp_path):
    explicit = tmp_path / "corrupt.h5"
    explicit.write_bytes(b"not hdf5")
    with pytest.raises(features.WeightsUnavailable, match="corrupt.h5' cannot be loaded"):
        features.load_driver_keras_model(settings(tmp_path, weights_file=str(explicit)))


def test_unknown_weights_choice_is_refused(tmp_path):
    with pytest.raises(features.WeightsUnavailable, match="silver.weights='imagenet21k'"):
        features.load_driver_keras_model(settings(tmp_path, choice="imagenet21k"))


def test_seed_weights_load_into_mobilenet_v2(tmp_path):
    if not (MODEL_SEED / features.WEIGHTS_FILE_NAME).is_file():
        pytest.skip(f"MobileNetV2 weights not found in {MODEL_SEED}")
    loaded = runtimes.load_driver_model(settings(tmp_path, seed_dir=str(MODEL_SEED)), runtimes.Runtime("keras"))
    assert sum(a.size for a in loaded.payload) == 2_257_984  # MobileNetV2 1.0/224 no-top parameter count
    assert len(loaded.weights_sha256) == 64


@pytest.mark.spark
def test_job_without_weights_stops_with_exit_code_2_and_no_trace(spark, make_conf, tmp_path, sample, capsys):
    copy_sample(tmp_path / "input", 2)
    conf = make_conf(tmp_path / "input")
    bronze.run(spark, conf, "bronze-run")
    capsys.readouterr()
    code = silver.main(
        [
            "--set", f"lake.root={conf['lake.root']}", "--set", f"silver.keras_home={tmp_path / 'empty-home'}",
            "--set", f"silver.model_seed_dir={tmp_path / 'empty-seed'}", "--set", "silver.download=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "KERAS_HOME" in err and "silver.keras_home" in err and "Traceback" not in err
    assert Layout.from_conf(conf).read(spark, "silver") is None


def test_missing_weights_are_reported_even_when_the_worker_warm_up_fails(spark, make_conf, tmp_path, sample, capsys, monkeypatch):
    # The warm-up runs beside the weights loading; its own failure must not hide the weights error.
    copy_sample(tmp_path / "input", 2)
    conf = make_conf(tmp_path / "input")
    bronze.run(spark, conf, "bronze-run")
    failed_warm_up = Future()
    failed_warm_up.set_exception(RuntimeError("Python worker exited unexpectedly"))
    monkeypatch.setattr(silver, "warm_up_workers", lambda spark, workers, runtime_name, tf_threads: failed_warm_up)
    capsys.readouterr()
    code = silver.main(
        [
            "--set", f"lake.root={conf['lake.root']}", "--set", f"silver.keras_home={tmp_path / 'empty-home'}",
            "--set", f"silver.model_seed_dir={tmp_path / 'empty-seed'}", "--set", "silver.download=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "KERAS_HOME" in err and "Traceback" not in err


class FakeBroadcast:
    def __init__(self, value):
        self.value = value


class FakeModel:
    def __init__(self):
        self.weights = None

    def set_weights(self, weights):
        self.weights = weights


@pytest.fixture
def fresh_worker(monkeypatch) -> list[FakeModel]:
    """A Python worker with no model yet; returns the list of models it builds."""
    built: list[FakeModel] = []

    def build(weights=None):
        built.append(FakeModel())
        return built[-1]

    monkeypatch.setattr(features, "build_model", build)
    monkeypatch.setattr(features, "configure_tensorflow", lambda threads: None)
    monkeypatch.setattr(features, "_worker_model", {})
    return built


def test_worker_builds_the_model_once_and_sets_new_weights_into_it(fresh_worker):
    first = features.worker_model(FakeBroadcast(["w1"]), "sha-1", 1)
    assert features.worker_model(FakeBroadcast(["w1"]), "sha-1", 1) is first
    assert len(fresh_worker) == 1 and first.weights == ["w1"]
    other = features.worker_model(FakeBroadcast(["w2"]), "sha-2", 1)
    assert other.weights == ["w2"] and len(fresh_worker) == 1


def test_a_warmed_worker_only_sets_the_weights(fresh_worker):
    features.warm_worker(1)
    features.warm_worker(1)
    assert len(fresh_worker) == 1 and fresh_worker[0].weights is None
    model = features.worker_model(FakeBroadcast(["w1"]), "sha-1", 1)
    assert model is fresh_worker[0] and model.weights == ["w1"] and len(fresh_worker) == 1


def test_a_weights_file_named_by_a_uri_is_read_through_the_session_file_system(spark, tmp_path):
    """On EMR silver.weights_file is an s3a:// object (uploaded by deploy package): the driver copies it
    through Hadoop's file system to a local file for Keras. A file:// URI takes the same path here."""
    from pipelines.config import load_conf

    remote = tmp_path / "bucket" / features.WEIGHTS_FILE_NAME
    remote.parent.mkdir()
    remote.write_bytes(b"weights bytes from the bucket")
    conf = load_conf(["conf/local.yaml"], [f"silver.weights_file={remote.as_uri()}"])
    local = silver.driver_weights_settings(spark, conf).weights_file
    assert "://" not in local and local.endswith(features.WEIGHTS_FILE_NAME)
    assert open(local, "rb").read() == b"weights bytes from the bucket"
    assert features.locate_weights_file(silver.driver_weights_settings(spark, conf))[1].startswith("weights_file")
    missing = load_conf(["conf/local.yaml"], [f"silver.weights_file={(tmp_path / 'nope.h5').as_uri()}"])
    with pytest.raises(features.WeightsUnavailable, match=r"silver.weights_file 'file:.*nope.h5' cannot be read .*deploy package"):
        silver.driver_weights_settings(spark, missing)
