"""Silver preprocessing and batching as pure functions (no Spark, no weights file)."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from tests.conftest import jpeg_bytes, png_bytes
from pipelines import features
from pipelines.images import EXIF_ORIENTATION_TAG


def _asymmetric_image() -> Image.Image:
    """A 3x2 RGB image whose 6 pixels all differ, so every transposition is distinguishable."""
    image = Image.new("RGB", (3, 2))
    for index, xy in enumerate([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]):
        image.putpixel(xy, (index * 40, 255 - index * 40, index * 10))
    return image


def _with_exif_orientation(image: Image.Image, orientation: int) -> Image.Image:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    out = io.BytesIO()
    image.save(out, format="PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(out.getvalue()))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation):
    image = _asymmetric_image()
    expected = ImageOps.exif_transpose(_with_exif_orientation(image, orientation))
    result = features.apply_orientation(image, orientation)
    assert result.size == expected.size
    assert list(result.getdata()) == list(expected.convert("RGB").getdata())


def test_missing_orientation_leaves_the_image_as_is():
    image = _asymmetric_image()
    assert list(features.apply_orientation(image, None).getdata()) == list(image.getdata())


def test_grayscale_becomes_three_equal_channels():
    rgb = features.to_rgb(Image.new("L", (4, 4), 77))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (77, 77, 77)


def test_cmyk_converts_like_pillow():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 0, 0))
    assert features.to_rgb(cmyk).getpixel((1, 1)) == cmyk.convert("RGB").getpixel((1, 1)) == (255, 0, 255)


def test_palette_uses_its_colours():
    palette = Image.new("RGB", (4, 4), (10, 120, 230)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert features.to_rgb(palette).getpixel((0, 0)) == (10, 120, 230)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [(0, (255, 255, 255)), (255, (200, 0, 0)), (128, (227, 127, 127))],
)
def test_alpha_is_composited_on_white(alpha, expected):
    rgba = Image.new("RGBA", (2, 2), (200, 0, 0, alpha))
    assert features.to_rgb(rgba).getpixel((0, 0)) == pytest.approx(expected, abs=1)


def test_grey_with_alpha_and_palette_transparency_are_composited_on_white():
    assert features.to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert features.to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    levels = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(levels).save(out, format="PNG")
    image = Image.open(io.BytesIO(out.getvalue()))
    assert image.mode.startswith("I")
    rgb = np.asarray(features.to_rgb(image))
    assert rgb[..., 0].tolist() == [[0, 100], [200, 255]]


def test_resize_is_bilinear_to_224():
    two_pixels = Image.new("L", (2, 1))
    two_pixels.putpixel((1, 0), 255)
    resized = features.resize(features.to_rgb(two_pixels))
    values = set(np.asarray(resized)[..., 0].ravel().tolist())
    assert resized.size == (224, 224)
    assert len(values) > 2  # nearest neighbour would give only 0 and 255


def test_image_array_applies_orientation_before_resizing():
    upright = Image.new("RGB", (60, 30), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 30, 30))  # left half red
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera rotated by 90 degrees would store it
    out = io.BytesIO()
    stored.save(out, format="PNG")
    array = features.image_array(out.getvalue(), 6)
    assert array.shape == (224, 224, 3) and array.dtype == np.float32
    assert array[112, 10].tolist() == [255.0, 0.0, 0.0] and array[112, 213].tolist() == [0.0, 0.0, 255.0]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (None, "empty_content"),
        (b"", "empty_content"),
        (jpeg_bytes()[:200], "undecodable"),
        (os.urandom(2048), "undecodable"),
        (png_bytes()[:45], "undecodable"),
    ],
    ids=["null", "empty", "truncated-jpeg", "random-bytes", "truncated-png"],
)
def test_bad_bytes_give_a_reason(content, code):
    with pytest.raises(features.ImageDecodeError) as error:
        features.image_array(content, None)
    assert str(error.value).startswith(code + ":")


def test_preprocess_scales_to_minus_one_one():
    batch = features.preprocess([np.zeros((224, 224, 3), np.float32), np.full((224, 224, 3), 255, np.float32)])
    assert batch.shape == (2, 224, 224, 3)
    assert batch[0].max() == -1.0 and batch[1].min() == 1.0


def test_preprocess_equals_keras_mobilenet_v2_preprocess_input_element_for_element():
    from keras.applications import mobilenet_v2

    pixels = np.random.default_rng(7).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    pixels[0, 0, 0] = [0, 127.5, 255]
    ours = features.preprocess(list(pixels))
    assert ours.dtype == np.float32
    assert np.array_equal(ours, mobilenet_v2.preprocess_input(pixels.copy()))


class RecordingModel:
    """Stands in for MobileNetV2: returns each image's mean input value, and records batch sizes.

    With `nan_for_dark`, images whose mean input is below 0 get NaN features (a model gone wrong).
    """

    def __init__(self, nan_for_dark: bool = False):
        self.batch_sizes: list[int] = []
        self.nan_for_dark = nan_for_dark

    def predict_on_batch(self, inputs: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(inputs))
        means = inputs.reshape(len(inputs), -1).mean(axis=1)
        out = np.repeat(means[:, None], features.FEATURE_SIZE, axis=1)
        if self.nan_for_dark:
            out[means < 0] = np.nan
        return out


def test_featurize_keeps_order_batches_and_reasons():
    white, black = jpeg_bytes(color=(255, 255, 255)), jpeg_bytes(color=(0, 0, 0), mode="RGB")
    contents = [white, b"", black, os.urandom(100), white, black, None]
    orientations = pd.Series([1, None, pd.NA, 3, 6, 8, None], dtype="Int32").tolist()
    model = RecordingModel()
    vectors, errors = features.featurize(model, contents, orientations, batch_size=2)
    assert model.batch_sizes == [2, 2]
    assert [e is None for e in errors] == [True, False, True, False, True, True, False]
    assert errors[1].startswith("empty_content:") and errors[3].startswith("undecodable:")
    assert all(vectors[i] is None for i in (1, 3, 6))
    assert vectors[0].shape == (features.FEATURE_SIZE,) and vectors[0].dtype == np.float32
    assert vectors[0][0] > 0.9 and vectors[4][0] > 0.9  # white: inputs near +1
    assert vectors[2][0] < -0.9 and vectors[5][0] < -0.9  # black: inputs near -1


def test_featurize_quarantines_non_finite_outputs():
    contents = [jpeg_bytes(color=(255, 255, 255)), jpeg_bytes(color=(0, 0, 0))]
    vectors, errors = features.featurize(RecordingModel(nan_for_dark=True), contents, [None, None], batch_size=8)
    assert errors[0] is None and vectors[0] is not None
    assert vectors[1] is None and errors[1].startswith("non_finite_features:")


def test_weights_sha256_identifies_the_arrays():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)]
    changed = [arrays[0].copy(), arrays[1].copy()]
    changed[1][2] = 1.0001
    assert features.weights_sha256(arrays) == features.weights_sha256([a.copy() for a in arrays])
    assert features.weights_sha256(arrays) != features.weights_sha256(changed)
