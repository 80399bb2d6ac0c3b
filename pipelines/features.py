"""MobileNetV2 features: image preprocessing (pure), weights on the driver, one model per Python worker.

Why this split (see docs/silver.md):
- Preprocessing follows Keras' reference path (`keras.utils.load_img` then
  `mobilenet_v2.preprocess_input`) with three deliberate choices: the bronze `orientation` column is
  applied (bronze removed the EXIF block from the bytes), transparent pixels are composited on
  white (the Fruits-360 background) instead of having their hidden colour exposed by a bare
  `convert("RGB")`, and the resize is bilinear (Keras' `load_img` defaults to nearest, which turns
  a 100x100 image upscaled to 224x224 into blocks; bilinear is what the ImageNet training pipeline
  and `image_dataset_from_directory` use).
- The weights are read once, on the driver, from the Keras cache, a seed copy, an explicit file or
  Keras' download; executors never read a file or the network: they get the arrays by broadcast.
- Each Python worker builds the model once and keeps it at module level, so a reused worker
  (`spark.python.worker.reuse`, on by default) serves every later batch and task without rebuilding.
- Keras and TensorFlow are imported lazily: `KERAS_HOME` must be set before Keras is imported, and
  the TensorFlow thread pools must be sized before TensorFlow runs its first operation.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

IMAGE_SIZE = 224
FEATURE_SIZE = 1280
MODEL_NAME = "mobilenet_v2_1.0_224_no_top_avgpool"
# The name Keras gives the no-top alpha-1.0 224 weights in its cache folder ($KERAS_HOME/models/).
WEIGHTS_FILE_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
KERAS_CACHE_SUBDIR = "models"
WEIGHT_CHOICES = ("imagenet", "random")
RESAMPLE = Image.Resampling.BILINEAR
WHITE = (255, 255, 255, 255)

# EXIF orientation -> the transposition that makes the image upright (same table as
# PIL.ImageOps.exif_transpose; 1 and missing values mean "already upright").
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_GRAY16_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageDecodeError(ValueError):
    """One image cannot be turned into a model input; the message is the quarantine reason."""


class WeightsUnavailable(RuntimeError):
    """No usable weights file; the message says where it was looked for and how to provide it."""


# ---------------------------------------------------------------- preprocessing (pure)


def decode(content: bytes | None) -> Image.Image:
    """Fully decode the stored bytes with Pillow (a truncated file fails here, not later)."""
    if not content:
        raise ImageDecodeError("empty_content: the bronze content is null or has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(bytes(content)))
            image.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a quarantine reason
        raise ImageDecodeError(f"undecodable: {type(exc).__name__}: {exc}") from exc
    return image


def apply_orientation(image: Image.Image, orientation: int | None) -> Image.Image:
    """Make the image upright from its EXIF orientation (1..8; None or 1 leave it as it is)."""
    method = _ORIENTATION_TRANSPOSE.get(orientation) if orientation is not None else None
    return image.transpose(method) if method is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any Pillow mode: grey, CMYK, palette as `convert("RGB")`; alpha composited on white.

    16-bit grey (PNG) is scaled to 8 bits first: Pillow's own conversion would clip every value
    above 255 to white.
    """
    if image.mode in _GRAY16_MODES:
        levels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), mode="L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize(image: Image.Image) -> Image.Image:
    """To the model's 224x224 input with bilinear interpolation (aspect ratio not kept, as Keras)."""
    if image.size == (IMAGE_SIZE, IMAGE_SIZE):
        return image
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), RESAMPLE)


def image_array(content: bytes | None, orientation: int | None) -> np.ndarray:
    """Bytes -> float32 224x224x3 RGB array in 0..255 (what `load_img` + `img_to_array` give)."""
    image = decode(content)
    try:
        upright = to_rgb(apply_orientation(image, orientation))
        return np.asarray(resize(upright), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - a conversion failure is a quarantine reason too
        raise ImageDecodeError(f"unconvertible: {image.mode} {image.size}: {type(exc).__name__}: {exc}") from exc


def preprocess(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack and scale pixels from [0, 255] to the model's input range [-1, 1].

    The arithmetic of Keras' `mobilenet_v2.preprocess_input` (mode "tf": x / 127.5 - 1, in
    float32), written out so that a TFLite worker runs without importing Keras and TensorFlow; a
    test holds it equal to Keras' function, element for element.
    """
    batch = np.stack(arrays).astype(np.float32, copy=False)  # np.stack made a new array: scaled in place
    batch /= np.float32(127.5)
    batch -= np.float32(1.0)
    return batch


def featurize(
    model: Any, contents: Sequence[bytes | None], orientations: Sequence[Any], batch_size: int
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Features (float32, 1280) or an error reason for each image, in the input order.

    Images are decoded and sent to the model `batch_size` at a time, so memory holds one batch of
    224x224x3 inputs whatever the Arrow batch is. A bad image gets a reason and never stops the
    others; a failing model call does raise (it is not the image's fault).
    """
    features: list[np.ndarray | None] = [None] * len(contents)
    errors: list[str | None] = [None] * len(contents)
    pending_rows: list[int] = []
    pending_arrays: list[np.ndarray] = []

    def flush() -> None:
        outputs = np.asarray(model.predict_on_batch(preprocess(pending_arrays)), dtype=np.float32)
        for row, vector in zip(pending_rows, outputs):
            if np.isfinite(vector).all():
                features[row] = vector
            else:
                errors[row] = "non_finite_features: the model returned NaN or infinity for this image"
        pending_rows.clear()
        pending_arrays.clear()

    for row, (content, orientation) in enumerate(zip(contents, orientations)):
        try:
            pending_arrays.append(image_array(content, _orientation_value(orientation)))
            pending_rows.append(row)
        except ImageDecodeError as exc:
            errors[row] = str(exc)
        if len(pending_arrays) == batch_size:
            flush()
    if pending_arrays:
        flush()
    return features, errors


def _orientation_value(value: Any) -> int | None:
    """pandas gives a nullable integer column as numbers, None, pd.NA or NaN."""
    return None if pd.isna(value) else int(value)


# ---------------------------------------------------------------- model and weights


def build_model(weights: str | None = None) -> Any:
    """MobileNetV2 alpha 1.0, 224x224x3, no classifier, global average pooling: 1280 features.

    `weights` is None (random initial values, to be replaced by `set_weights`) or a weights file.
    """
    return import_keras().applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=1.0, include_top=False, weights=weights, pooling="avg"
    )


def weights_sha256(weights: Sequence[np.ndarray]) -> str:
    """sha256 of the weight arrays' bytes, in model order: identifies exactly what was broadcast."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsSettings:
    """The `silver.*` settings that say where the driver finds the weights."""

    choice: str  # imagenet | random
    keras_home: str
    seed_dir: str
    weights_file: str
    weights_url: str
    download: bool


def use_keras_home(keras_home: str) -> None:
    """Point Keras at `keras_home` (it reads KERAS_HOME once, when it is first imported)."""
    os.environ["KERAS_HOME"] = keras_home
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def locate_weights_file(settings: WeightsSettings) -> tuple[Path, str]:
    """The weights file to load and how it was found: explicit file, cache, seed copy, download.

    A seed copy (a pre-downloaded file shared on the machine) is copied into the Keras cache and
    checked by sha256, so later runs find it in the cache as Keras would.
    """
    if settings.weights_file:
        path = Path(settings.weights_file)
        if not path.is_file():
            raise WeightsUnavailable(
                f"silver.weights_file='{path}' does not exist: fix the path, or set it empty to use the "
                f"Keras cache ({settings.keras_home}/{KERAS_CACHE_SUBDIR}, conf silver.keras_home)"
            )
        return path, f"weights_file {path}"
    cached = Path(settings.keras_home) / KERAS_CACHE_SUBDIR / WEIGHTS_FILE_NAME
    if cached.is_file():
        return cached, f"Keras cache {cached}"
    seed = Path(settings.seed_dir) / WEIGHTS_FILE_NAME
    if seed.is_file():
        _copy_verified(seed, cached)
        return cached, f"seed {seed} copied to the Keras cache"
    download_error = "download disabled (silver.download=false)"
    if settings.download:
        try:
            return _download(settings, cached), f"downloaded from {settings.weights_url}"
        except Exception as exc:  # noqa: BLE001 - any network failure ends in the message below
            download_error = f"download from {settings.weights_url} failed: {exc}"
    raise WeightsUnavailable(
        f"MobileNetV2 ImageNet weights not found. Looked for {WEIGHTS_FILE_NAME} in the Keras cache "
        f"KERAS_HOME/{KERAS_CACHE_SUBDIR} = '{cached.parent}' (conf silver.keras_home) and in the seed folder "
        f"'{settings.seed_dir}' (conf silver.model_seed_dir, env FRUITS_MODEL_SEED); {download_error}. "
        f"Put the file in one of these folders, set silver.weights_file=/path/to/{WEIGHTS_FILE_NAME}, "
        f"or run where the network is reachable."
    )


def _copy_verified(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    if file_sha256(partial) != file_sha256(source):
        partial.unlink()
        raise WeightsUnavailable(f"copying '{source}' to '{target}' gave different bytes; check the disk and retry")
    partial.replace(target)  # atomic: a concurrent run never sees a half-copied file


def _download(settings: WeightsSettings, cached: Path) -> Path:
    keras = import_keras()
    origin = settings.weights_url.rstrip("/") + "/" + WEIGHTS_FILE_NAME
    return Path(
        keras.utils.get_file(
            WEIGHTS_FILE_NAME, origin, cache_subdir=KERAS_CACHE_SUBDIR, cache_dir=str(cached.parent.parent)
        )
    )


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_driver_keras_model(settings: WeightsSettings) -> tuple[Any, str]:
    """Build the model once on the driver, with the weights the settings name, and say where they came
    from (for the run summary); pipelines.runtimes broadcasts its weights or its conversion."""
    if settings.choice not in WEIGHT_CHOICES:
        raise WeightsUnavailable(
            f"silver.weights='{settings.choice}' is not one of {', '.join(WEIGHT_CHOICES)} "
            f"(random is for unit tests only)"
        )
    use_keras_home(settings.keras_home)
    if settings.choice == "random":
        model, source = build_model(None), "random initial values (silver.weights=random, tests only)"
    else:
        path, source = locate_weights_file(settings)
        try:
            model = build_model(str(path))
        except Exception as exc:  # noqa: BLE001 - a corrupt or wrong file is named, not traced
            raise WeightsUnavailable(
                f"the weights file '{path}' cannot be loaded into MobileNetV2 1.0/224 no-top "
                f"({type(exc).__name__}: {exc}); delete it or point silver.weights_file at a good copy"
            ) from exc
    return model, source


# ---------------------------------------------------------------- one model per Python worker

# This Python worker's model: key = sha256 of the weights set in it, None = built, no weights set yet.
_worker_model: dict[str | None, Any] = {}


def configure_tensorflow(threads: int) -> None:
    """Size TensorFlow's pools before its first operation: `threads` for one op, 1 across ops.

    MobileNetV2 is a chain of layers, so an inter-op pool would only add threads beyond the core
    budget. In a reused worker the runtime is already started and keeps the sizes it was given.
    """
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process: the first sizes stay


def import_tensorflow() -> Any:
    """TensorFlow, imported with its native start-up lines kept off the console.

    TensorFlow 2.21 writes its oneDNN and CPU-feature notices, and absl's "before InitializeLog"
    notice, straight to the process's stderr while it loads, before its logging reads
    TF_CPP_MIN_LOG_LEVEL: four lines per process, in every stage's output and from every Python
    worker. The import runs with file descriptor 2 sent to /dev/null; a failed import still
    raises its Python error once the descriptor is back.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import tensorflow
    return tensorflow


@contextmanager
def native_stderr_silenced():
    """File descriptor 2 sent to /dev/null for the block: native libraries' notices (TensorFlow's
    start-up, TFLite's XNNPACK "Created delegate" line) write there, not through Python's sys.stderr."""
    sys.stderr.flush()
    console = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(console, 2)
        os.close(console)


def import_keras() -> Any:
    """Keras on its TensorFlow backend, TensorFlow imported quietly first (import_tensorflow)."""
    import_tensorflow()
    import keras

    return keras


def warm_worker(threads: int) -> None:
    """Start TensorFlow and build the model (weights not set) in this Python worker, if not done yet.

    Run by silver's warm-up tasks while the driver is still loading the weights, so a worker's
    TensorFlow import and model build (~2.5 s) overlap the driver's instead of following them.
    """
    if not _worker_model:
        configure_tensorflow(threads)
        _worker_model[None] = build_model(None)


def worker_model(broadcast_weights: Any, sha256: str, threads: int) -> Any:
    """The model with these weights, built once per Python worker process and then reused.

    A worker that already holds a model (warmed up, or set with other weights by an earlier run in
    the same session) gets the broadcast weights set into it: every weight is replaced, so there
    is nothing to rebuild.
    """
    cached = _worker_model.get(sha256)
    if cached is not None:
        return cached
    warm_worker(threads)
    model = next(iter(_worker_model.values()))
    model.set_weights(broadcast_weights.value)
    _worker_model.clear()
    _worker_model[sha256] = model
    return model
