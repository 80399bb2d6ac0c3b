"""Lakes for the prediction tests, written file by file through the classifier stage's contract.

Why not the Spark stages: the prediction side is tested on its own, in seconds, with every file it
reads written as pipelines/classifier_predictor.py and pipelines/exports.py write them (predictor.json,
predictor.npz, current.json, gold's Parquet parts with _SUCCESS). The numbers are real: features of
real sample photos computed by the same FeatureModel the predictor uses, a PCA of them (numpy SVD
of the centred features) and a linear classifier in softmax form whose logits are minus the squared
distance to each class centroid (coefficients 2c, intercepts -|c|^2): a multinomial logistic model
like the stage's, not a trained one. The end-to-end equality with the batch path is tested on a lake
the Spark stages built (the classifier's test module).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import bundle as bundles
from pipelines import exports
from pipelines.config import Conf
from pipelines.features import FEATURE_SIZE
from pipelines.images import sha256_hex
from pipelines.layout import Layout
from pipelines.predict import CheckedPhoto, FeatureModel, check_photo


def local(location: str) -> Path:
    return Path(location.removeprefix("file:"))


def write_export(conf: Conf, gold_version: str, run_id: str, table: pa.Table, complete: bool = True) -> Path:
    """One part of gold's Parquet export (with _SUCCESS when `complete`)."""
    folder = local(exports.part_folder(exports.roots(conf)["parquet"], gold_version, run_id))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000-test-c000.snappy.parquet")
    if complete:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def export_table(image_ids, labels, splits, paths, pca: np.ndarray) -> pa.Table:
    columns = {"image_id": image_ids, "label": labels, "split": splits, "path": paths}
    columns.update({f"pc_{i + 1}": pca[:, i].astype(np.float64) for i in range(pca.shape[1])})
    return pa.table(columns)


def write_bundle(conf: Conf, meta: dict, arrays: dict[str, np.ndarray], publish: bool = True) -> Path:
    """<version>/predictor.json and .npz, then current.json naming it (last, as the stage does)."""
    root = local(Layout.from_conf(conf).classifier_models)
    folder = root / meta["classifier_version"]
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / bundles.ARRAYS).write_bytes(buffer.getvalue())
    (folder / bundles.META).write_text(json.dumps(meta), encoding="utf-8")
    if publish:
        (root / bundles.CURRENT).write_text(json.dumps({"classifier_version": meta["classifier_version"]}), encoding="utf-8")
    return folder


def numpy_pca(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean, scale (ones: gold.standardize false) and the top-k principal axes (d, k) of the rows."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, np.ones(x.shape[1]), vt[:k].T


def centroid_classifier(pca: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class labels, coefficients (C, k), intercepts (C,)) of softmax(-|x - centroid|^2)."""
    classes = sorted(set(labels))
    centroids = np.stack([pca[[label == c for label in labels]].mean(axis=0) for c in classes])
    return classes, 2.0 * centroids, -(centroids**2).sum(axis=1)


def synthetic_meta(version: str, gold_version: str, labels: list[str], k: int, **changes) -> dict:
    """A predictor.json record (feature model fields made up: for tests that never load the model)."""
    meta = {
        "classifier_version": version, "gold_model_version": gold_version, "feature_model": "0" * 64 + "@tflite",
        "weights_sha256": "0" * 64, "runtime": "tflite", "labels": labels, "k": k, "trained_at": "2026-12-02T10:00:00Z",
    }
    meta.update(changes)
    return meta


def synthetic_arrays(labels: list[str], k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.normal(size=FEATURE_SIZE), "scale": np.ones(FEATURE_SIZE), "components": rng.normal(size=(FEATURE_SIZE, k)),
        "coefficients": rng.normal(size=(len(labels), k)), "intercepts": rng.normal(size=len(labels)),
    }


def build_lake(conf: Conf, model: FeatureModel, photos: list[Path], k: int, version: str = "clf-1",
               gold_version: str = "gold-1") -> dict:
    """A lake whose gold export holds `photos` (split and label from their folders) and whose published
    classifier separates their labels; returns what the tests compare with."""
    checked: list[CheckedPhoto] = [check_photo(p.read_bytes(), conf["bronze.max_image_pixels"]) for p in photos]
    vectors, errors = model.features(checked)
    assert not any(errors), errors
    x = np.stack(vectors).astype(np.float64)
    labels = [p.parent.name for p in photos]
    mean, scale, components = numpy_pca(x, k)
    pca = ((x - mean) / scale) @ components
    classes, coefficients, intercepts = centroid_classifier(pca, labels)
    image_ids = [sha256_hex(c.content) for c in checked]
    table = export_table(image_ids, labels, [p.parent.parent.name for p in photos], [f"file:{p}" for p in photos], pca)
    write_export(conf, gold_version, "run-1", table)
    meta = synthetic_meta(version, gold_version, classes, k, feature_model=model.identity,
                          weights_sha256=model.weights_sha256, runtime=model.runtime.name)
    write_bundle(conf, meta, {"mean": mean, "scale": scale, "components": components,
                              "coefficients": coefficients, "intercepts": intercepts})
    return {"image_ids": image_ids, "labels": labels, "pca": pca, "classes": classes, "meta": meta}
