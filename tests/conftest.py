"""Shared fixtures: one local SparkSession for the whole run, a fresh lake per test, test images.

Hooks: tests/skip_guard.py (skips counted; under CI an unlisted skip fails the run) and the
isolation fixtures below (the shared session's runtime conf and the process environment are put
back after each test, whatever stage main it ran in-process).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.config import PROJECT_ROOT, load_conf
from pipelines.features import KERAS_CACHE_SUBDIR, WEIGHTS_FILE_NAME

pytest_plugins = ["tests.skip_guard", "pytester"]

_LOCAL = load_conf(["conf/local.yaml"])


def _first_existing(candidates: list[Path], exists) -> Path:
    return next((c for c in candidates if exists(c)), candidates[0])


# The Fruits-360 sample: the shared seed folder, else the input folder `make test` prepares from it
# (scripts/fetch_dataset.py: a link to the seed, or the public archive downloaded).
SAMPLE_ROOT = _first_existing([Path(_LOCAL.path("input.seed_path")), Path(_LOCAL.path("input.path"))], Path.is_dir)
# A folder holding the MobileNetV2 weights file: the shared seed, else the Keras cache `make test`
# fills (scripts/fetch_weights.py).
MODEL_SEED = _first_existing(
    [Path(_LOCAL.path("silver.model_seed_dir")), Path(_LOCAL.path("silver.keras_home")) / KERAS_CACHE_SUBDIR],
    lambda folder: (folder / WEIGHTS_FILE_NAME).is_file(),
)
# Default per-test timeout is pyproject's `timeout`; end-to-end tests over many images or several
# stage processes get this one through @pytest.mark.timeout(LONG_TIMEOUT_S).
LONG_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local SparkSession (2 cores, Delta, jars from the project Ivy cache) shared by all tests.

    Its warehouse (where Spark would write a table created without a location, and its default
    `spark-warehouse/` in the current folder) is a temporary folder, never the repository.
    """
    from pipelines.session import build_spark_session

    overlay = tmp_path_factory.mktemp("spark-conf") / "tests.yaml"
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    overlay.write_text(yaml.safe_dump({"spark": {"extra": {"spark.sql.warehouse.dir": str(warehouse)}}}), encoding="utf-8")
    conf = load_conf(["conf/local.yaml", overlay], ["spark.master=local[2]", "spark.shuffle_partitions=2"])
    session = build_spark_session(conf, "tests")
    yield session
    session.stop()


def _active_session():
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


@pytest.fixture(autouse=True)
def isolated_state(monkeypatch):
    """Put back what a test may change for the rest of the process, whatever code it ran.

    - the environment (a stage main run in-process exports KERAS_HOME, for instance): every
      variable is restored as it was;
    - the runtime conf of the shared SparkSession (a stage main run in-process joins it and sets its
      own settings, e.g. shuffle partitions from conf): every key is restored, keys it added unset.
    """
    environ = dict(os.environ)
    session = _active_session()
    before = dict(session.conf.getAll) if session is not None else None
    yield
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    if session is not None and _active_session() is session:
        after = dict(session.conf.getAll)
        for key in set(after) - set(before):
            _try_conf(session.conf.unset, key)
        for key, value in before.items():
            if after.get(key) != value:
                _try_conf(session.conf.set, key, value)


def _try_conf(call, *args) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001 - static settings cannot be changed (nor were they)
        pass


@pytest.fixture
def make_conf(tmp_path):
    """Conf for a fresh lake under tmp_path: make_conf(input_path, *overrides)."""

    def _make(input_path: str | os.PathLike | None = None, *overrides: str):
        base = [f"lake.root={tmp_path / 'lake'}", "spark.master=local[2]", "spark.shuffle_partitions=2"]
        if input_path is not None:
            base.append(f"input.path={input_path}")
        return load_conf(["conf/local.yaml"], [*base, *overrides])

    return _make


@pytest.fixture(scope="session")
def sample() -> Path:
    """The Fruits-360 sample folder. Absent, the tests using it are skipped (a skip the skip guard
    sees, so under CI it fails the run unless allowed in tests/allowed_skips.py)."""
    if not SAMPLE_ROOT.is_dir():
        pytest.skip(f"Fruits-360 sample not found at {SAMPLE_ROOT}: `make test` links it (scripts/fetch_dataset.py)")
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def weights_seed() -> Path:
    """The folder holding the MobileNetV2 weights file (skipped where absent, seen by the skip guard)."""
    if not (MODEL_SEED / WEIGHTS_FILE_NAME).is_file():
        pytest.skip(f"MobileNetV2 weights not found in {MODEL_SEED}: `make test` caches them (scripts/fetch_weights.py)")
    return MODEL_SEED


def sample_files(count: int, split: str = "Training") -> list[Path]:
    """`count` real sample images spread over the labels, in a stable order."""
    files = sorted((SAMPLE_ROOT / split).glob("*/*.jpg"))
    step = max(1, len(files) // count)
    return files[::step][:count]


def copy_sample(dest: Path, count: int, split: str = "Training") -> list[Path]:
    """Copy `count` real images into dest/<split>/<label>/ and return the copies."""
    copies = []
    for src in sample_files(count, split):
        target = dest / split / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        copies.append(target)
    return copies


def jpeg_bytes(size=(32, 24), color=(200, 30, 30), mode="RGB", **save_kwargs) -> bytes:
    """A small JPEG made with Pillow (a gradient so the pixels are not all equal)."""
    from PIL import Image

    image = Image.new(mode, size, color)
    if mode == "RGB":
        for x in range(size[0]):
            image.putpixel((x, 0), (x * 7 % 256, 90, 160))
    out = io.BytesIO()
    image.save(out, format="JPEG", **save_kwargs)
    return out.getvalue()


def png_bytes(size=(20, 20), mode="RGBA", color=(10, 200, 30, 128), **save_kwargs) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format="PNG", **save_kwargs)
    return out.getvalue()


def pytest_collection_modifyitems(config, items):
    """Slow tests get the long timeout unless they set their own."""
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


def load_script(name: str):
    """A module of scripts/ (not a package: the scripts are run as files), imported once."""
    import importlib.util
    import sys

    module_name = f"fruits_scripts_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, PROJECT_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
