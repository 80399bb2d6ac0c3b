"""Silver's inference runtimes: Keras `predict_on_batch`, or the same model converted to TFLite.

Why two (see docs/silver.md, "Runtimes"):
- Keras runs MobileNetV2 as a TensorFlow graph: every batch goes through TensorFlow's executor
  and its oneDNN kernels. The TFLite interpreter runs the converted flat buffer with XNNPACK's
  fused CPU kernels and no graph dispatch per batch: on this project's machine it computes the
  same features 2 to 4 times faster (`make bench`, measurement `limit_tflite`).
- The interpreter is LiteRT's (package `ai-edge-litert`), not `tf.lite.Interpreter`: the same
  kernels and the same features, but a Python worker imports it in ~0.1 s and ~40 MB where
  importing TensorFlow took ~2.5 s and ~600 MB, in every worker of every run (docs/silver.md).
  TensorFlow stays on the driver, for the Keras model and the conversion.
- The driver builds and converts the model once and broadcasts the converted bytes (~9 MB, as the
  weights); each Python worker builds one interpreter from them and keeps it at module level for
  every batch and task it runs, as it keeps the Keras model.
- What computed a vector is recorded on every silver row: `model_weights_sha256` (the weights) and
  `model_runtime` (`keras`, `tflite`, or `tflite-float16` / `tflite-dynamic_range` for the
  quantised conversions the bench measures). Quantisation changes the features (bench: feature
  error and gold accuracy), so it is part of the runtime's name.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines import features
from pipelines.config import ConfError

RUNTIMES = ("keras", "tflite")
QUANTIZATIONS = ("none", "float16", "dynamic_range")
# Runtime recorded on silver rows written before the runtime was recorded: Keras was the only one.
LEGACY_RUNTIME = "keras"


@dataclass(frozen=True)
class Runtime:
    """`silver.runtime` and `silver.tflite_quantization`, checked."""

    engine: str  # keras | tflite
    quantization: str = "none"  # tflite only

    @property
    def name(self) -> str:
        """What silver rows record in `model_runtime`."""
        if self.engine == "keras" or self.quantization == "none":
            return self.engine
        return f"{self.engine}-{self.quantization}"

    @classmethod
    def from_values(cls, engine: str, quantization: str) -> "Runtime":
        if engine not in RUNTIMES:
            raise ConfError(f"silver.runtime='{engine}' is not one of {', '.join(RUNTIMES)}: set it in conf or with --set")
        if quantization not in QUANTIZATIONS:
            raise ConfError(
                f"silver.tflite_quantization='{quantization}' is not one of {', '.join(QUANTIZATIONS)} "
                f"(none keeps the features within 1e-4 of Keras; the others are measured options, docs/silver.md)"
            )
        if engine == "keras" and quantization != "none":
            raise ConfError(
                f"silver.tflite_quantization='{quantization}' needs silver.runtime=tflite (Keras runs the float32 model)"
            )
        return cls(engine, quantization)


def model_identity(weights_sha256: str, runtime_name: str | None) -> str:
    """One string for what computed a vector: the weights' sha256, plus `@runtime` unless Keras.

    Keras rows (and rows written before the runtime was recorded, None) keep the bare sha256, so
    what gold recorded before runtimes existed still names the same feature model.
    """
    runtime_name = runtime_name or LEGACY_RUNTIME
    return weights_sha256 if runtime_name == LEGACY_RUNTIME else f"{weights_sha256}@{runtime_name}"


def model_identity_column(silver: DataFrame) -> Column:
    """model_identity of each row of a silver frame (a table without `model_runtime` holds Keras rows)."""
    sha = F.col("model_weights_sha256")
    if "model_runtime" not in silver.columns:
        return sha
    runtime = F.coalesce(F.col("model_runtime"), F.lit(LEGACY_RUNTIME))
    return F.when(runtime == LEGACY_RUNTIME, sha).otherwise(F.concat(sha, F.lit("@"), runtime))


# ---------------------------------------------------------------- conversion (driver)


def convert(model: Any, quantization: str) -> bytes:
    """The Keras model as a TFLite flat buffer (float32, or quantised as asked).

    Keras' export step prints the model's signature on stdout: captured, so a run's output stays
    the stage's own lines.
    """
    tf = features.import_tensorflow()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range (int8 weights)
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return bytes(converter.convert())


@dataclass(frozen=True)
class DriverModel:
    """What the driver broadcasts and what silver rows record."""

    payload: Any  # the weight arrays (keras) or the TFLite flat buffer (tflite)
    weights_sha256: str
    source: str
    runtime: Runtime


def load_driver_model(settings: features.WeightsSettings, runtime: Runtime) -> DriverModel:
    """Build the model once on the driver; its weights (keras) or its conversion (tflite) to broadcast.

    For TFLite, a conversion an earlier run made from the same weights file is taken as it is
    (recorded_conversion): the driver then neither imports TensorFlow nor builds the Keras model,
    ~8 s and ~700 MB of the driver's memory on every run with new images.
    """
    if runtime.engine == "tflite":
        recorded = recorded_conversion(settings, runtime)
        if recorded is not None:
            return recorded
    model, source = features.load_driver_keras_model(settings)
    arrays = [np.asarray(w) for w in model.get_weights()]
    sha256 = features.weights_sha256(arrays)
    if runtime.engine == "keras":
        return DriverModel(arrays, sha256, source, runtime)
    cache = Path(settings.keras_home) / features.KERAS_CACHE_SUBDIR
    payload = cached_conversion(model, sha256, runtime, cache)
    if settings.choice == "imagenet":
        record_conversion(settings, runtime, sha256, payload)
    return DriverModel(payload, sha256, source, runtime)


@functools.cache
def tensorflow_version() -> str:
    """The installed TensorFlow's version, from its package metadata, without importing it (~6 s);
    the package providing `tensorflow` may be tensorflow, tensorflow-cpu (this project's pin), ..."""
    distributions = importlib.metadata.packages_distributions().get("tensorflow") or ["tensorflow"]
    return importlib.metadata.version(distributions[0])


def conversion_file(folder: Path, weights_sha256: str, runtime: Runtime) -> Path:
    """Where the conversion of these weights for this runtime is kept: its bytes depend only on the
    weights, the quantization and TensorFlow's version."""
    return folder / f"{features.MODEL_NAME}-{weights_sha256[:16]}-{runtime.name}-tf{tensorflow_version()}.tflite"


def _conversion_record(settings: features.WeightsSettings, runtime: Runtime) -> tuple[Path, str, str]:
    """(record file, the weights file's sha256, how the weights file was found) for these settings.

    The record is named by the weights file's bytes, the runtime and TensorFlow's installed version,
    so another file, runtime or version has none.
    """
    path, source = features.locate_weights_file(settings)
    file_sha256 = features.file_sha256(path)
    folder = Path(settings.keras_home) / features.KERAS_CACHE_SUBDIR
    name = f"{features.MODEL_NAME}-file{file_sha256[:16]}-{runtime.name}-tf{tensorflow_version()}.json"
    return folder / name, file_sha256, source


def recorded_conversion(settings: features.WeightsSettings, runtime: Runtime) -> DriverModel | None:
    """The conversion record_conversion kept for this weights file and runtime, or None (no record,
    another file, a damaged record or conversion file: the caller converts again, which rewrites both)."""
    if settings.choice != "imagenet":  # random initial values have no file; another value is refused by the full path
        return None
    record_path, file_sha256, source = _conversion_record(settings, runtime)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        payload = (record_path.parent / record["conversion"]).read_bytes()
        if record["weights_file_sha256"] != file_sha256 or hashlib.sha256(payload).hexdigest() != record["conversion_sha256"]:
            return None
        return DriverModel(payload, record["weights_sha256"], source, runtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_conversion(settings: features.WeightsSettings, runtime: Runtime, weights_sha256: str, payload: bytes) -> None:
    """Keep, beside the cached conversion, which weights file it came from and the sha256 of its
    weight arrays (what silver rows record), so the next run needs neither TensorFlow nor Keras."""
    record_path, file_sha256, _ = _conversion_record(settings, runtime)
    conversion = conversion_file(record_path.parent, weights_sha256, runtime)
    if not conversion.is_file():
        return  # a read-only cache kept no conversion: nothing to point at
    record = {
        "weights_file_sha256": file_sha256, "weights_sha256": weights_sha256, "runtime": runtime.name,
        "conversion": conversion.name, "conversion_sha256": hashlib.sha256(payload).hexdigest(),
    }
    with contextlib.suppress(OSError):  # a read-only cache only costs the next run a Keras build
        partial = record_path.with_name(f"{record_path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        partial.replace(record_path)


def cached_conversion(model: Any, weights_sha256: str, runtime: Runtime, folder: Path) -> bytes:
    """The conversion of these weights for this runtime, from the Keras cache folder when an earlier
    run converted them there, else converted now and kept there.

    A conversion costs 10-15 s on 2 cores, more than the inference of a small increment; its bytes
    depend only on the weights, the quantization and the TensorFlow version, which name the file.
    A cached file the interpreter cannot load is converted again and replaced.
    """
    path = conversion_file(folder, weights_sha256, runtime)
    if path.is_file():
        cached = path.read_bytes()
        try:
            TFLiteModel(cached, threads=1)
            return cached
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt below
            pass
    converted = convert(model, runtime.quantization)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next run a conversion
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(converted)
        partial.replace(path)  # atomic: a concurrent run reads a whole file or none
    return converted


# ---------------------------------------------------------------- interpreter (workers)


class TFLiteModel:
    """A TFLite interpreter with Keras' `predict_on_batch` signature, so features.featurize runs it.

    The input is resized only when the batch size changes (the last batch of a partition), since
    a resize re-plans the XNNPACK graph.
    """

    def __init__(self, model_bytes: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        with features.native_stderr_silenced():
            self._interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None

    def predict_on_batch(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if inputs.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, inputs.shape)
            with features.native_stderr_silenced():  # XNNPACK says it created its delegate
                self._interpreter.allocate_tensors()
            self._shape = inputs.shape
        self._interpreter.set_tensor(self._input, inputs)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


# This Python worker's interpreter, keyed by the model identity of the bytes it runs.
_worker_interpreter: dict[str, TFLiteModel] = {}


def worker_predictor(broadcast_payload: Any, weights_sha256: str, runtime_name: str, threads: int) -> Any:
    """The model to call in this Python worker: built once per worker, reused for every batch and task."""
    if runtime_name == "keras":
        return features.worker_model(broadcast_payload, weights_sha256, threads)
    key = model_identity(weights_sha256, runtime_name)
    if key not in _worker_interpreter:
        _worker_interpreter.clear()
        _worker_interpreter[key] = TFLiteModel(broadcast_payload.value, threads)
    return _worker_interpreter[key]


def warm_predictor(broadcast_payload: Any, weights_sha256: str, runtime_name: str, threads: int, batch_size: int) -> None:
    """Build this worker's predictor (worker_predictor) and run it once on `batch_size` blank images:
    the interpreter's tensors are then allocated and XNNPACK's plan made for the shape of the
    inference's first batch (silver.first_batch_rows), before the inference pass instead of in it."""
    predictor = worker_predictor(broadcast_payload, weights_sha256, runtime_name, threads)
    predictor.predict_on_batch(np.zeros((batch_size, features.IMAGE_SIZE, features.IMAGE_SIZE, 3), np.float32))


def warm_worker(runtime_name: str, threads: int) -> None:
    """What a worker can do before the broadcast: Keras builds its model; TFLite imports LiteRT's
    interpreter (it needs the bytes to be built, which takes a few milliseconds)."""
    if runtime_name == "keras":
        features.warm_worker(threads)
        return
    import ai_edge_litert.interpreter  # noqa: F401 - imported now, used by TFLiteModel

