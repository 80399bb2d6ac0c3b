"""Shared fixtures: one local SparkSession for the whole run, a fresh lake per test, test images."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT, load_conf

_LOCAL = load_conf(["conf/local.yaml"])
SAMPLE_ROOT = Path(_LOCAL.path("input.seed_path"))
MODEL_SEED = Path(_LOCAL.path("silver.model_seed_dir"))


def pytest_collection_modifyitems(config, items):
    """Tests that need the shared Fruits-360 sample are skipped with a reason where it is absent."""
    if SAMPLE_ROOT.is_dir():
        return
    skip = pytest.mark.skip(reason=f"Fruits-360 sample not found at {SAMPLE_ROOT}")
    for item in items:
        if "sample" in item.fixturenames:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession (2 cores, Delta, jars from the project Ivy cache) shared by all tests."""
    from pipelines.session import build_spark_session

    conf = load_conf(["conf/local.yaml"], ["spark.master=local[2]", "spark.shuffle_partitions=2"])
    session = build_spark_session(conf, "tests")
    yield session
    session.stop()


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
    """The shared Fruits-360 sample folder (tests using it are skipped where it is absent)."""
    return SAMPLE_ROOT


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
