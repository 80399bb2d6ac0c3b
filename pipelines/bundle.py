"""What a prediction reads from the lake: the classifier bundle, gold's export as a neighbour index,
the fruit cards; and the arithmetic that turns features into an answer (pure numpy).

Why numpy and not the saved Spark models: the answer must come in milliseconds without a JVM, and
it must equal the batch path (gold's `pca`, the classifier's probabilities) within 1e-5. The
classifier stage therefore writes, beside its Spark model, the few arrays the arithmetic needs
(`predictor.npz`: gold's centring and kept PCA components, the logistic regression's coefficients)
and what they were computed from (`predictor.json`); this module checks them and applies them in
float64, the precision Spark ML computes in.

Layout (the contract with pipelines/classifier_predictor.py, docs/serving.md):
    <lake.root>/<lake.models>/<classifier.models_dir>/current.json        {"classifier_version": v}
    <lake.root>/<lake.models>/<classifier.models_dir>/<v>/predictor.json  versions, runtime, labels, k
    <lake.root>/<lake.models>/<classifier.models_dir>/<v>/predictor.npz   mean, scale, components,
                                                                             coefficients, intercepts
    <gold Parquet export>/model_version=<gold_model_version>/run_id=<r>/part-*.parquet (+ _SUCCESS)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipelines import exports
from pipelines.config import Conf, ConfError
from pipelines.features import FEATURE_SIZE
from pipelines.lakefiles import LakeFiles
from pipelines.layout import Layout

CURRENT = "current.json"
META = "predictor.json"
ARRAYS = "predictor.npz"
CARD_FIELDS = ("name_en", "name_fr", "species", "family")
_META_FIELDS = {
    "classifier_version": str, "gold_model_version": str, "feature_model": str, "weights_sha256": str,
    "runtime": str, "labels": list, "k": int, "trained_at": str,
}
_RERUN = "rerun the classifier stage (`make run`, or python -m pipelines.classifier) to publish a whole bundle"


class NoClassifier(RuntimeError):
    """No classifier is published in this lake yet; the message says where it looked and what to run."""


class BundleError(RuntimeError):
    """A published bundle or gold export cannot be used; the message names the file and the fix."""


# ---------------------------------------------------------------- arithmetic (pure)


def project(features: np.ndarray, mean: np.ndarray, scale: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Gold's PCA scores of feature rows: ((x - mean) / scale) @ components, in float64.

    A 0 scale (a feature constant over gold's fit) gives a centred value of 0, as Spark's
    StandardScaler does with withStd, instead of a division by zero.
    """
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    scale = np.asarray(scale, dtype=np.float64)
    centred = np.divide(x - mean, scale, out=np.zeros_like(x), where=scale != 0)
    return centred @ np.asarray(components, dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def class_probabilities(pca: np.ndarray, coefficients: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """The multinomial logistic regression's probabilities: softmax(coefficients @ pca + intercepts)."""
    return softmax(np.atleast_2d(pca) @ np.asarray(coefficients, dtype=np.float64).T + intercepts)


def top_classes(probabilities: np.ndarray, count: int) -> list[int]:
    """Indices of the `count` most probable classes, most probable first (ties: lower index first)."""
    order = np.lexsort((np.arange(len(probabilities)), -np.asarray(probabilities)))
    return [int(i) for i in order[:count]]


def nearest(query: np.ndarray, matrix: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the `count` rows of `matrix` nearest to `query` (Euclidean) and their distances,
    nearest first; equal distances keep the matrix's row order (deterministic)."""
    if count <= 0 or len(matrix) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    distances = np.sqrt(((np.asarray(matrix, dtype=np.float64) - np.asarray(query, dtype=np.float64)) ** 2).sum(axis=1))
    if len(distances) > count:  # only the candidates up to the count-th distance are sorted
        bound = np.partition(distances, count - 1)[count - 1]
        candidates = np.flatnonzero(distances <= bound)
    else:
        candidates = np.arange(len(distances))
    order = candidates[np.lexsort((candidates, distances[candidates]))][:count]
    return order, distances[order]


# ---------------------------------------------------------------- the classifier bundle


@dataclass(frozen=True)
class Bundle:
    """One published classifier version: its record and its arrays, checked against each other."""

    meta: dict
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    coefficients: np.ndarray
    intercepts: np.ndarray
    location: str

    @property
    def version(self) -> str:
        return self.meta["classifier_version"]

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    def probabilities(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(PCA scores, class probabilities) of feature rows."""
        pca = project(features, self.mean, self.scale, self.components)
        return pca, class_probabilities(pca, self.coefficients, self.intercepts)


def current_version(files: LakeFiles, conf: Conf) -> str:
    """The published classifier version named by current.json (NoClassifier when there is none)."""
    location = f"{Layout.from_conf(conf).classifier_models}/{CURRENT}"
    try:
        record = json.loads(files.read_bytes(location))
    except FileNotFoundError:
        raise NoClassifier(
            f"no classifier is published in the lake {conf.path('lake.root')} (no {location}): run `make run` "
            f"(the classifier stage trains one on gold), or point --conf/--set lake.root at a lake that has one"
        ) from None
    except ValueError as exc:
        raise BundleError(f"{location} is not valid JSON ({exc}): {_RERUN}") from exc
    version = record.get("classifier_version") if isinstance(record, dict) else None
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise BundleError(f"{location} does not name a classifier_version (a plain name): {_RERUN}")
    return version


def load_bundle(files: LakeFiles, conf: Conf, version: str) -> Bundle:
    """predictor.json and predictor.npz of `version`, every field and shape checked."""
    folder = Layout.from_conf(conf).classifier_model(version)
    try:
        meta = json.loads(files.read_bytes(f"{folder}/{META}"))
        raw = files.read_bytes(f"{folder}/{ARRAYS}")
    except FileNotFoundError as exc:
        raise BundleError(f"the classifier bundle {folder} is incomplete ({exc}): {_RERUN}") from exc
    except ValueError as exc:
        raise BundleError(f"{folder}/{META} is not valid JSON ({exc}): {_RERUN}") from exc
    problems = [
        f"{name} must be {kind.__name__}" for name, kind in _META_FIELDS.items()
        if not isinstance(meta.get(name) if isinstance(meta, dict) else None, kind)
    ]
    if problems:
        raise BundleError(f"{folder}/{META}: {'; '.join(problems)}: {_RERUN}")
    if meta["classifier_version"] != version:
        raise BundleError(f"{folder}/{META} says classifier_version {meta['classifier_version']!r}, its folder {version!r}: {_RERUN}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name], dtype=np.float64) for name in ("mean", "scale", "components", "coefficients", "intercepts")}
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{folder}/{ARRAYS} cannot be read ({type(exc).__name__}: {exc}): {_RERUN}") from exc
    bundle = Bundle(meta=meta, location=folder, **arrays)
    shape_problem = _shape_problem(bundle)
    if shape_problem:
        raise BundleError(f"{folder}/{ARRAYS}: {shape_problem}: {_RERUN}")
    return bundle


def _shape_problem(bundle: Bundle) -> str | None:
    d, k, c = FEATURE_SIZE, bundle.meta["k"], len(bundle.labels)
    expected = {"mean": (d,), "scale": (d,), "components": (d, k), "coefficients": (c, k), "intercepts": (c,)}
    for name, shape in expected.items():
        actual = getattr(bundle, name).shape
        if actual != shape:
            return f"{name} has shape {actual}, expected {shape} (features {d}, k {k}, {c} labels)"
    for name in expected:
        if not np.isfinite(getattr(bundle, name)).all():
            return f"{name} holds NaN or infinite values"
    return None


# ---------------------------------------------------------------- gold's export as a neighbour index


@dataclass(frozen=True)
class NeighbourIndex:
    """Gold's rows of one model version: ids, labels, splits, source paths and PCA scores (n, k)."""

    image_ids: list[str]
    labels: list[str]
    splits: list[str]
    paths: list[str | None]
    matrix: np.ndarray
    parts: frozenset[str]
    positions: dict[str, int]

    def row(self, image_id: str) -> int | None:
        """The row of an image of this index, None when it is not in it."""
        return self.positions.get(image_id)


def export_folder(conf: Conf, gold_model_version: str) -> str:
    """The Parquet export folder of one gold model version (pipelines/exports.py's layout)."""
    return f"{exports.roots(conf)['parquet']}/model_version={quote(gold_model_version, safe='')}"


def complete_parts(files: LakeFiles, folder: str) -> frozenset[str]:
    """run_id=<r> folders of the version folder whose _SUCCESS marker is written (one listing)."""
    marker = f"/{exports.SUCCESS}"
    return frozenset(
        f.removeprefix(folder + "/").removesuffix(marker) for f in files.files(folder, recursive=True)
        if f.endswith(marker) and f.count("/") == folder.count("/") + 2
    )


def load_index(files: LakeFiles, conf: Conf, gold_model_version: str, k: int) -> NeighbourIndex:
    """Every complete part of gold's Parquet export for this model version, sorted by image_id."""
    folder = export_folder(conf, gold_model_version)
    parts = complete_parts(files, folder)
    if not parts:
        raise BundleError(
            f"gold's Parquet export has no complete part for model version {gold_model_version} under {folder}: "
            f"run `make run` (gold writes it), then publish the classifier again if gold was refitted"
        )
    columns = ["image_id", "label", "split", *[f"pc_{i + 1}" for i in range(k)]]
    tables = []
    for part in sorted(parts):
        for location in files.files(f"{folder}/{part}"):
            if location.rsplit("/", 1)[-1].startswith(("_", ".")) or not location.endswith(".parquet"):
                continue
            filesystem, path = files.resolve(location)
            try:
                table = pq.read_table(path, filesystem=filesystem)
            except (OSError, pa.ArrowException) as exc:
                raise BundleError(f"{location} cannot be read ({exc}): rerun gold (`make run`), which rewrites a bad part") from exc
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise BundleError(f"{location} lacks the columns {', '.join(missing)} (k={k} from the classifier bundle): rerun `make run`")
            paths = table.column("path") if "path" in table.column_names else pa.nulls(table.num_rows, pa.string())
            tables.append(table.select(columns).append_column("path", paths.cast(pa.string())))
    whole = pa.concat_tables(tables).sort_by("image_id") if tables else None
    if whole is None or whole.num_rows == 0:
        raise BundleError(f"gold's Parquet export under {folder} holds no rows: run `make run`")
    matrix = np.column_stack([whole.column(f"pc_{i + 1}").to_numpy().astype(np.float64) for i in range(k)])
    image_ids = whole.column("image_id").to_pylist()
    return NeighbourIndex(
        image_ids, whole.column("label").to_pylist(), whole.column("split").to_pylist(),
        whole.column("path").to_pylist(), matrix, parts, {image_id: n for n, image_id in enumerate(image_ids)},
    )


# ---------------------------------------------------------------- fruit cards


def load_cards(conf: Conf) -> dict[str, dict]:
    """label -> {name_en, name_fr, species, family} from predict.fruit_cards (checked)."""
    path = conf.path("predict.fruit_cards")
    try:
        with open(path, encoding="utf-8") as handle:
            cards = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfError(f"predict.fruit_cards='{path}' does not exist: point it at the fruit cards file (conf/fruit_cards.yaml)") from None
    except yaml.YAMLError as exc:
        raise ConfError(f"predict.fruit_cards='{path}' is not valid YAML: {exc}") from exc
    if not isinstance(cards, dict):
        raise ConfError(f"predict.fruit_cards='{path}' must map each label to its card")
    for label, card in cards.items():
        if not isinstance(card, dict) or any(not isinstance(card.get(f), str) or not card.get(f) for f in CARD_FIELDS):
            raise ConfError(f"predict.fruit_cards='{path}': the card of {label!r} needs the text fields {', '.join(CARD_FIELDS)}")
    return {str(label): {f: card[f] for f in CARD_FIELDS} for label, card in cards.items()}
