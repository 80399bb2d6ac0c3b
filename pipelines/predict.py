"""`python -m pipelines.predict PHOTO...`: the fruit in a photo and the lake's most similar images.

Why outside Spark: the app asks about one photo at a time and wants the answer in milliseconds; a
SparkSession costs seconds to start. The answer must still be the one the batch path would give,
so nothing is re-implemented: the photo goes through bronze's own checks and scrubbing
(`images.inspect_image`: format, pixel limit, EXIF orientation read before the metadata is
dropped), silver's preprocessing and model call (`features.featurize` with the runtime and batch
size silver uses, the weights located by the same `silver.*` settings and checked against the
sha256 the classifier was trained on), then gold's centring and PCA and the classifier's softmax
from the bundle the classifier stage publishes (pipelines/bundle.py, float64 as Spark ML).

The same `Predictor` serves the HTTP service (`serving/`): `Predictor.load(conf)`, `answer(bytes,
name)`, `image(image_id)` for a similar image's bytes, and `refreshed()`, the cheap check that
loads a newer classifier (or a changed gold export) when one is published.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import bundle as bundles
from pipelines import features, runtimes
from pipelines.options import EXIT_INPUT, load_stage_conf, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.images import inspect_image, sha256_hex
from pipelines.lakefiles import LakeFiles

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Exit status when the lake's storage does not answer (as pipelines/cli.py execute_stage).
EXIT_STORAGE = 3


class PhotoError(ValueError):
    """One photo cannot be answered; the message is one line saying why (and which setting, if any)."""


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo as bronze would store it: scrubbed bytes, EXIF orientation, format."""

    content: bytes
    orientation: int | None
    image_format: str


def check_photo(data: bytes, max_pixels: int) -> CheckedPhoto:
    """Bronze's checks on an uploaded or named photo (JPEG/PNG, pixel limit, full decode)."""
    inspection = inspect_image(data, max_pixels)
    if inspection.reason is not None:
        raise PhotoError(inspection.reason)
    return CheckedPhoto(inspection.content, inspection.orientation, inspection.image_format)


def read_photo(path: str, max_bytes: int) -> bytes:
    """A photo file's bytes; PhotoError (one line) when it is missing, a folder, unreadable or too large."""
    file = Path(path)
    try:
        if file.is_dir():
            raise PhotoError("is a folder, not a photo")
        size = file.stat().st_size
        if size > max_bytes:
            raise PhotoError(f"too_large: {size} bytes, over bronze.max_file_bytes={max_bytes}")
        return file.read_bytes()
    except FileNotFoundError:
        raise PhotoError("no such file") from None
    except PermissionError:
        raise PhotoError("not readable (permission denied)") from None
    except OSError as exc:
        raise PhotoError(f"cannot be read: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- the feature model


def runtime_of(name: str, where: str) -> runtimes.Runtime:
    """The Runtime a bundle's `runtime` names (keras, tflite, tflite-<quantization>)."""
    engine, _, quantization = name.partition("-")
    try:
        return runtimes.Runtime.from_values(engine, quantization or "none")
    except ConfError:
        raise bundles.BundleError(
            f"{where} names the runtime {name!r}, which pipelines/runtimes.py does not run: retrain with a known silver.runtime"
        ) from None


class FeatureModel:
    """MobileNetV2 in the bundle's runtime, built once per process as a silver worker builds it."""

    def __init__(self, conf: Conf, runtime: runtimes.Runtime, files: LakeFiles):
        from pipelines.silver import weights_settings  # silver's own reading of the silver.* settings

        settings = weights_settings(conf)
        threads = conf["predict.threads"] or os.cpu_count() or 1
        if runtime.engine == "keras":  # TFLite runs on LiteRT: no TensorFlow unless a conversion is made
            features.configure_tensorflow(threads)  # before TensorFlow's first operation (the model build)
        with tempfile.TemporaryDirectory(prefix="fruits-weights-") as scratch:
            if "://" in settings.weights_file:  # on AWS the weights file is an S3 object, as for silver
                local = Path(scratch) / settings.weights_file.rsplit("/", 1)[-1]
                try:
                    local.write_bytes(files.read_bytes(settings.weights_file))
                except FileNotFoundError:
                    raise features.WeightsUnavailable(
                        f"silver.weights_file '{settings.weights_file}' does not exist: upload it with "
                        f"`python -m deploy package` or point silver.weights_file at a readable copy"
                    ) from None
                settings = dataclasses.replace(settings, weights_file=str(local))
            loaded = runtimes.load_driver_model(settings, runtime)
        if runtime.engine == "keras":
            self._model: Any = features.build_model(None)
            self._model.set_weights(loaded.payload)
        else:
            self._model = runtimes.TFLiteModel(loaded.payload, threads)
        self.runtime = runtime
        self.weights_sha256 = loaded.weights_sha256
        self.source = loaded.source
        self.identity = runtimes.model_identity(loaded.weights_sha256, runtime.name)
        self._batch_size = conf["silver.batch_size"]
        self._lock = threading.Lock()  # one interpreter: calls from the service's threads take turns

    def features(self, photos: Sequence[CheckedPhoto]) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Silver's featurize over the photos, silver.batch_size at a time."""
        with self._lock:
            return features.featurize(
                self._model, [p.content for p in photos], [p.orientation for p in photos], self._batch_size
            )


# ---------------------------------------------------------------- the predictor


class Predictor:
    """A published classifier, its gold neighbour index, the fruit cards and the feature model."""

    def __init__(self, conf: Conf, files: LakeFiles, bundle: bundles.Bundle, index: bundles.NeighbourIndex,
                 cards: dict[str, dict], model: FeatureModel):
        self.conf, self.files, self.bundle, self.index, self.cards, self.model = conf, files, bundle, index, cards, model
        self.max_pixels = conf["bronze.max_image_pixels"]

    @classmethod
    def load(cls, conf: Conf, model: FeatureModel | None = None, files: LakeFiles | None = None) -> "Predictor":
        """The published classifier, with `model` when it is the feature model the bundle names.

        Raises NoClassifier, BundleError, ConfError or features.WeightsUnavailable with one line.
        """
        files = files if files is not None else LakeFiles(conf)
        cards = bundles.load_cards(conf)
        bundle = bundles.load_bundle(files, conf, bundles.current_version(files, conf))
        index = bundles.load_index(files, conf, bundle.meta["gold_model_version"], bundle.meta["k"])
        runtime = runtime_of(bundle.meta["runtime"], f"{bundle.location}/{bundles.META}")
        if model is None or model.identity != bundle.meta["feature_model"]:
            model = FeatureModel(conf, runtime, files)
        if model.identity != bundle.meta["feature_model"] or model.weights_sha256 != bundle.meta["weights_sha256"]:
            raise bundles.BundleError(
                f"the MobileNetV2 weights the silver.* settings locate ({model.source}) are {model.identity}, but the "
                f"classifier {bundle.version} was trained on features of {bundle.meta['feature_model']}: point "
                f"silver.keras_home or silver.weights_file at the weights silver used, or retrain (`make run`)"
            )
        return cls(conf, files, bundle, index, cards, model)

    @property
    def versions(self) -> dict:
        meta = self.bundle.meta
        return {
            "classifier_version": meta["classifier_version"], "gold_model_version": meta["gold_model_version"],
            "feature_model": meta["feature_model"], "runtime": meta["runtime"], "trained_at": meta["trained_at"],
            "labels": len(meta["labels"]), "lake_images": len(self.index.image_ids),
        }

    def refreshed(self) -> "Predictor":
        """This predictor, or a new one when another classifier is published or gold's export gained or
        lost parts (one read of current.json and one listing)."""
        version = bundles.current_version(self.files, self.conf)
        if version == self.bundle.version:
            folder = bundles.export_folder(self.conf, self.bundle.meta["gold_model_version"])
            if bundles.complete_parts(self.files, folder) == self.index.parts:
                return self
        return Predictor.load(self.conf, model=self.model, files=self.files)

    def answer(self, content: bytes, photo: str) -> dict:
        """The answer for one photo's bytes; PhotoError when they are not a usable image."""
        result = self.answer_checked([(photo, check_photo(content, self.max_pixels))])[0]
        if "error" in result:
            raise PhotoError(result["error"])
        return result

    def answer_files(self, paths: Sequence[str]) -> Iterator[dict]:
        """One answer or {"photo", "error"} per path, in order, silver.batch_size photos at a time
        (one model call per batch, as silver; memory holds one batch of photos whatever the count)."""
        size = self.conf["silver.batch_size"]
        for start in range(0, len(paths), size):
            checked: list[tuple[str, CheckedPhoto | str]] = []
            for path in paths[start:start + size]:
                try:
                    checked.append((path, check_photo(read_photo(path, self.conf["bronze.max_file_bytes"]), self.max_pixels)))
                except PhotoError as exc:
                    checked.append((path, str(exc)))
            yield from self.answer_checked(checked)

    def answer_checked(self, photos: Sequence[tuple[str, "CheckedPhoto | str"]]) -> list[dict]:
        """Answers for (name, checked photo or error reason) pairs, in order."""
        results = {n: {"photo": name, "error": p} for n, (name, p) in enumerate(photos) if isinstance(p, str)}
        good = [n for n, (_, p) in enumerate(photos) if isinstance(p, CheckedPhoto)]
        vectors, errors = self.model.features([photos[n][1] for n in good]) if good else ([], [])
        featured = [(n, v) for n, v in zip(good, vectors) if v is not None]
        if featured:
            pca, probabilities = self.bundle.probabilities(np.stack([v for _, v in featured]))
            for (n, _), scores, probs in zip(featured, pca, probabilities):
                results[n] = self._answer(photos[n][0], scores, probs)
        for n, error in zip(good, errors):
            if error is not None:
                results[n] = {"photo": photos[n][0], "error": error}
        return [results[n] for n in range(len(photos))]

    def _answer(self, photo: str, scores: np.ndarray, probabilities: np.ndarray) -> dict:
        labels = self.bundle.labels
        top = [
            {"label": labels[i], "probability": float(probabilities[i]), "card": self.cards.get(labels[i])}
            for i in bundles.top_classes(probabilities, self.conf["predict.top"])
        ]
        rows, distances = bundles.nearest(scores, self.index.matrix, self.conf["predict.similar"])
        similar = [
            {"image_id": self.index.image_ids[r], "label": self.index.labels[r], "split": self.index.splits[r],
             "path": self.index.paths[r], "distance": float(d)}
            for r, d in zip(rows, distances)
        ]
        return {"photo": photo, "top": top, "similar": similar}

    def image(self, image_id: str) -> tuple[bytes, str]:
        """A lake image's bytes (scrubbed as bronze stores them) and media type.

        LookupError when the image is not in gold's index; FileNotFoundError when its source file is
        gone or no longer holds the ingested image (its sha256 differs from the image id).
        """
        row = self.index.row(image_id)
        if row is None:
            raise LookupError(f"image {image_id} is not in gold (model version {self.bundle.meta['gold_model_version']})")
        path = self.index.paths[row]
        if not path:
            raise FileNotFoundError(f"gold's export records no source path for image {image_id}: rerun gold (`make run`)")
        try:
            checked = check_photo(self.files.read_bytes(source_location(self.conf, path)), self.max_pixels)
        except PhotoError as exc:
            raise FileNotFoundError(f"the source file of image {image_id} is no longer the ingested image ({exc})") from None
        if sha256_hex(checked.content) != image_id:
            raise FileNotFoundError(f"the source file of image {image_id} changed since it was ingested")
        return checked.content, MEDIA_TYPES[checked.image_format]


def source_location(conf: Conf, path: str) -> str:
    """Where a lake image's source file is: a URI or absolute path as recorded, or bronze's path
    relative to `input.path` (bronze records paths relative to the input folder)."""
    if "://" in path or path.startswith(("file:", "/")):
        return path
    if ".." in path.split("/"):
        raise FileNotFoundError(f"the recorded path {path!r} leaves input.path")
    return f"{conf.path('input.path')}/{path}"


# ---------------------------------------------------------------- command line


def text_lines(answer: dict) -> list[str]:
    """A few readable lines for one answer or error."""
    if "error" in answer:
        return [f"{answer['photo']}: error: {answer['error']}"]
    lines = [answer["photo"]]
    width = max(len(t["label"]) for t in answer["top"]) if answer["top"] else 0
    for fruit in answer["top"]:
        card = fruit["card"]
        about = f"{card['name_en']} / {card['name_fr']} · {card['family']} ({card['species']})" if card else "(no card)"
        lines.append(f"  {fruit['label']:<{width}}  {100 * fruit['probability']:6.2f} %  {about}")
    lines.append("  similar: " + ", ".join(f"{s['label']} ({s['split']}, {s['distance']:.2f})" for s in answer["similar"]))
    return lines


def json_line(answer: dict) -> str:
    return json.dumps(answer, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("The top fruits and the most similar lake images for each photo (docs/serving.md).")
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="JPEG or PNG files")
    parser.add_argument("--json", action="store_true", help="one JSON object per photo per line")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    try:
        predictor = Predictor.load(conf)
    except (bundles.NoClassifier, bundles.BundleError, ConfError, features.WeightsUnavailable) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:  # pyarrow's S3 errors: the storage did not answer or refused
        print(f"predict: cannot read the lake {conf.path('lake.root')} (s3.endpoint={conf['s3.endpoint']}): "
              f"{str(exc).splitlines()[0][:300]}; check the storage and its credentials, then rerun", file=sys.stderr)
        return EXIT_STORAGE
    failed = False
    for answer in predictor.answer_files(args.photos):
        failed = failed or "error" in answer
        if args.json:
            print(json_line(answer), flush=True)
        else:
            print("\n".join(text_lines(answer)), file=sys.stderr if "error" in answer else sys.stdout, flush=True)
    return EXIT_INPUT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
