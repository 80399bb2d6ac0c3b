"""`python -m pipelines.predict` equals the batch path: for the photos the chain ingested, the
predictor's components equal gold's row and its probabilities the classifier's row within 1e-5
(issue 16), computed without Spark from the saved bundle, through the same decode, orientation,
resize, MobileNetV2 runtime, centring, PCA and classifier; and the command's JSON says the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import predict
from pipelines.images import sha256_hex
from pipelines.layout import Layout

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TOLERANCE = 1e-5


def test_every_ingested_photo_gets_gold_s_components_and_the_classifier_s_probabilities(spark, chain_lake):
    conf, predictor = chain_lake.conf, chain_lake.predictor
    gold = {r["image_id"]: np.array(r["pca"]) for r in Layout.from_conf(conf).read(spark, "gold").collect()}
    scored = {r["image_id"]: r for r in Layout.from_conf(conf).read(spark, "classifier").collect()}
    photos = [predict.check_photo(path.read_bytes(), conf["bronze.max_image_pixels"]) for path in chain_lake.training]
    vectors, errors = predictor.model.features(photos)
    assert errors == [None] * len(photos)
    pca, probabilities = predictor.bundle.probabilities(np.stack(vectors))
    worst_pca = worst_probability = 0.0
    for photo, scores, probs in zip(photos, pca, probabilities):
        image_id = sha256_hex(photo.content)  # bronze's id: the sha256 of the bytes it stores
        worst_pca = max(worst_pca, float(np.max(np.abs(scores - gold[image_id]))))
        worst_probability = max(worst_probability, float(np.max(np.abs(probs - np.array(scored[image_id]["probabilities"])))))
        assert predictor.bundle.labels[int(np.argmax(probs))] == scored[image_id]["prediction"]
    print(f"{len(photos)} photos: largest |pca - gold| {worst_pca:.2e}, largest |p - classifier| {worst_probability:.2e}")
    assert worst_pca <= TOLERANCE and worst_probability <= TOLERANCE


def test_the_command_s_json_gives_the_classifier_s_top_3(spark, chain_lake, capsys):
    conf = chain_lake.conf
    photos = chain_lake.training[:3]
    settings = [f"lake.root={conf['lake.root']}", f"input.path={conf['input.path']}", f"silver.model_seed_dir={conf['silver.model_seed_dir']}"]
    assert predict.main([*(str(p) for p in photos), "--json", "--conf", "conf/local.yaml", *(a for s in settings for a in ("--set", s))]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scored = {r["image_id"]: r for r in Layout.from_conf(conf).read(spark, "classifier").collect()}
    labels = chain_lake.predictor.bundle.labels
    for path, answer in zip(photos, answers):
        row = scored[sha256_hex(predict.check_photo(path.read_bytes(), conf["bronze.max_image_pixels"]).content)]
        expected = sorted(zip(row["probabilities"], labels), reverse=True)[:3]
        assert answer["photo"] == str(path)
        assert [t["label"] for t in answer["top"]] == [label for _, label in expected]
        assert [t["probability"] for t in answer["top"]] == pytest.approx([p for p, _ in expected], abs=TOLERANCE)
        assert len(answer["similar"]) == 5 and answer["similar"][0]["distance"] == pytest.approx(0.0, abs=1e-4)  # itself
