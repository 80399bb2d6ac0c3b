"""The bad-input corpus is what it claims to be, and bronze's and silver's pure checks give each file
its expected outcome (no Spark: a failure here points at the file or the check, not at the jobs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines import features
from pipelines.config import load_conf
from pipelines.images import inspect_image
from tests.conftest import sample_files
from tests.reliability import corpus
from tests.reliability.corpus import FEATURIZED, IGNORED

MAX_PIXELS = load_conf(["conf/local.yaml"])["bronze.max_image_pixels"]


@pytest.fixture(scope="module")
def files(sample):
    return {f.path: f for f in corpus.build_corpus(sample_files(corpus.REAL_IMAGES))}


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_every_path_is_unique_and_every_image_has_distinct_bytes(files):
    images = corpus.image_files(list(files.values()))
    contents = [f.content for f in images if f.content]
    assert len(set(contents)) == len(contents)
    assert {f.expected for f in files.values()} >= {FEATURIZED, IGNORED, "empty_file", "too_many_pixels"}


def test_each_image_gets_its_expected_bronze_outcome(files):
    outcomes = {}
    for path, file in files.items():
        if file.expected == IGNORED:
            continue
        result = inspect_image(file.content, MAX_PIXELS)
        outcomes[path] = FEATURIZED if result.reason is None else result.reason.split(":", 1)[0]
    assert outcomes == {p: f.expected for p, f in files.items() if f.expected != IGNORED}


def test_odd_valid_images_are_the_modes_they_claim(files):
    odd = f"{corpus.SPLIT}/{corpus.ODD_LABEL}"
    assert open_image(files[f"{odd}/cmyk.jpg"].content).mode == "CMYK"
    assert open_image(files[f"{odd}/grey.jpg"].content).mode == "L"
    assert open_image(files[f"{odd}/grey16.png"].content).mode in ("I;16", "I")
    alpha = np.asarray(open_image(files[f"{odd}/alpha.png"].content))
    assert alpha.shape[-1] == 4 and alpha[..., 3].min() == 0
    assert open_image(files[f"{odd}/one_pixel.png"].content).size == (1, 1)
    assert Image.open(io.BytesIO(files[f"{odd}/animation.png"].content)).format == "GIF"


def test_bombs_are_small_files_declaring_huge_sizes(files):
    odd = f"{corpus.SPLIT}/{corpus.ODD_LABEL}"
    for name in ("bomb_pillow.png", "bomb_bronze.png", "bomb.jpg"):
        assert len(files[f"{odd}/{name}"].content) < 10_000, name
    header = files[f"{odd}/bomb_bronze.png"].content[16:24]
    assert int.from_bytes(header[:4], "big") ** 2 > MAX_PIXELS
    assert corpus.PILLOW_BOMB_SIDE**2 > 2 * Image.MAX_IMAGE_PIXELS > corpus.BRONZE_BOMB_SIDE**2 > MAX_PIXELS


def test_exif_rotated_photo_becomes_the_upright_pixels_in_silver_preprocessing(files):
    rotated = inspect_image(files[corpus.EXIF_ROTATED].content, MAX_PIXELS)
    assert rotated.orientation == 6
    assert b"Exif" not in rotated.content  # bronze removed the EXIF block: the orientation lives in its column
    upright = features.image_array(files[corpus.EXIF_UPRIGHT].content, None)
    as_stored = features.image_array(files[corpus.EXIF_AS_STORED].content, None)
    assert np.array_equal(features.image_array(rotated.content, rotated.orientation), upright)
    assert np.abs(upright - as_stored).max() > 50  # a real rotation, not a symmetric picture


def test_every_featurized_file_gives_a_model_input(files):
    for path, file in files.items():
        if file.expected != FEATURIZED:
            continue
        result = inspect_image(file.content, MAX_PIXELS)
        array = features.image_array(result.content, result.orientation)
        assert array.shape == (features.IMAGE_SIZE, features.IMAGE_SIZE, 3), path
        assert np.isfinite(array).all() and 0 <= array.min() and array.max() <= 255, path
