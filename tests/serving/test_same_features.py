"""A photo answered outside Spark goes through the batch path's own steps: the bytes bronze would
store, and the features silver computed, for the same files (Spark's bronze and silver on real
sample photos against the predictor's check_photo and FeatureModel, one photo per call as the
service calls it)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import bronze, silver
from pipelines.images import sha256_hex
from pipelines.layout import Layout
from pipelines.predict import check_photo
from tests.conftest import copy_sample

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_photos_get_bronze_bytes_and_silver_features(spark, make_conf, feature_model, weights_seed, tmp_path, sample):
    input_root = tmp_path / "input"
    copies = copy_sample(input_root, 12)
    conf = make_conf(input_root, f"silver.model_seed_dir={weights_seed}", "silver.batch_size=8")
    bronze.run(spark, conf, "bronze-1")
    silver.run(spark, conf, "silver-1")
    rows = (
        spark.read.format("delta").load(Layout.from_conf(conf).location("silver"))
        .join(spark.read.format("delta").load(Layout.from_conf(conf).location("bronze")).select("image_id", "path"), "image_id")
        .select("image_id", "path", "features", "model_weights_sha256", "model_runtime").collect()
    )
    assert len(rows) == len(copies)
    assert {(r.model_weights_sha256, r.model_runtime) for r in rows} == {(feature_model.weights_sha256, feature_model.runtime.name)}
    worst = 0.0
    for row in rows:
        checked = check_photo((input_root / row.path).read_bytes(), conf["bronze.max_image_pixels"])
        assert sha256_hex(checked.content) == row.image_id  # the bytes bronze stored
        vectors, errors = feature_model.features([checked])
        assert errors == [None]
        worst = max(worst, float(np.abs(vectors[0] - np.asarray(row.features, dtype=np.float32)).max()))
    assert worst < 1e-5, f"features differ from silver's by up to {worst}"
