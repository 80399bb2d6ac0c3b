"""The HTTP service through FastAPI's TestClient: the real predictor (MobileNetV2 on real sample
photos) behind /health, /predict, /images/{image_id} and the page."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil

import pytest
from fastapi.testclient import TestClient

from pipelines.predict import Predictor
from serving.app import Service, UploadTooLarge, create_app, limited
from tests.conftest import jpeg_bytes
from tests.serving.conftest import prediction_conf
from tests.serving.lakes import build_lake, synthetic_arrays, write_bundle


class Clock:
    """A monotonic clock the test moves by hand, to make the reload check due without waiting."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def client(served_lake):
    service = Service(served_lake.conf, load=lambda conf: served_lake.predictor)
    with TestClient(create_app(served_lake.conf, service)) as test_client:
        yield test_client


def upload(client, content: bytes, name: str = "photo.jpg", media: str = "image/jpeg"):
    return client.post("/predict", files={"file": (name, content, media)})


def test_health_names_the_loaded_versions(client, served_lake):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["classifier_version"] == served_lake.facts["meta"]["classifier_version"]
    assert body["gold_model_version"] == "gold-1" and body["lake_images"] == len(served_lake.training)


def test_predict_answers_a_sample_photo_with_cards_and_neighbours(client, served_lake):
    photo = served_lake.test_photos["Kiwi"]
    response = upload(client, photo.read_bytes(), photo.name)
    assert response.status_code == 200
    answer = response.json()
    assert answer["photo"] == photo.name and set(answer) == {"photo", "top", "similar"}
    assert [t["label"] for t in answer["top"]][0] == "Kiwi" and len(answer["top"]) == 3
    assert answer["top"][0]["card"]["name_fr"] == "Kiwi" and answer["top"][0]["card"]["family"] == "Actinidiaceae"
    assert sum(t["probability"] for t in answer["top"]) <= 1.0 + 1e-12
    assert len(answer["similar"]) == 5 and answer["similar"][0]["label"] == "Kiwi"
    distances = [s["distance"] for s in answer["similar"]]
    assert distances == sorted(distances)
    assert set(answer["similar"][0]) == {"image_id", "label", "split", "path", "distance"}
    # the same object as the predictor's own answer (what predict --json prints)
    assert answer == json.loads(json.dumps(served_lake.predictor.answer(photo.read_bytes(), photo.name)))


def test_a_bad_photo_gets_422_with_the_photo_and_a_one_line_error(client):
    response = upload(client, b"this is no image", "notes.jpg")
    assert response.status_code == 422
    assert response.json() == {"photo": "notes.jpg", "error": "not_an_image: no image decoder recognises the bytes"}
    truncated = upload(client, jpeg_bytes(size=(64, 64))[:-200], "cut.jpg")
    assert truncated.status_code == 422 and "\n" not in truncated.json()["error"]


def test_a_photo_over_the_pixel_limit_gets_422(served_lake):
    conf = served_lake.conf.with_overrides(["bronze.max_image_pixels=1000"])
    predictor = Predictor.load(conf, model=served_lake.predictor.model)
    with TestClient(create_app(conf, Service(conf, load=lambda c: predictor))) as client:
        response = upload(client, jpeg_bytes(size=(40, 30)), "big.jpg")
    assert response.status_code == 422
    assert response.json()["error"] == "too_many_pixels: 40x30 declared, over bronze.max_image_pixels=1000"


def test_an_upload_over_the_limit_gets_413(served_lake):
    conf = served_lake.conf.with_overrides(["serving.max_upload_bytes=1000"])
    with TestClient(create_app(conf, Service(conf, load=lambda c: served_lake.predictor))) as client:
        response = upload(client, b"x" * 1001)
        assert response.status_code == 413 and "serving.max_upload_bytes=1000" in response.json()["error"]
        huge = client.post("/predict", files={"file": ("huge.jpg", b"x" * 200_000, "image/jpeg")})
        assert huge.status_code == 413
        assert upload(client, b"x" * 1000).status_code == 422  # at the limit: read, then refused as no image


def test_the_body_limit_stops_reading_as_soon_as_it_is_passed():
    seen = []

    async def body():
        for chunk in (b"a" * 600, b"b" * 600, b"c" * 600):
            seen.append(len(chunk))
            yield chunk

    async def read(limit):
        return [chunk async for chunk in limited(body(), limit)]

    assert sum(map(len, asyncio.run(read(1800)))) == 1800
    seen.clear()
    with pytest.raises(UploadTooLarge):
        asyncio.run(read(1000))
    assert seen == [600, 600]  # the third chunk was never asked for


def test_requests_without_a_file_get_400(client):
    assert client.post("/predict", content=b"raw", headers={"content-type": "image/jpeg"}).status_code == 400
    response = client.post("/predict", data={"other": "field"}, files={"note": ("a.txt", b"x", "text/plain")})
    assert response.status_code == 400 and "field named file" in response.json()["error"]


def test_images_serves_the_similar_images_scrubbed_and_404_for_unknown(client, served_lake):
    image_id = served_lake.facts["image_ids"][0]
    response = client.get(f"/images/{image_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(response.content).hexdigest() == image_id
    assert client.get(f"/images/{'0' * 64}").status_code == 404
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/images/not-an-id").json()["error"].startswith("an image id is")


def test_images_of_a_removed_or_changed_source_file_get_404(feature_model, sample, weights_seed, tmp_path):
    photos = []
    for label in ("Banana", "Kiwi"):
        for source in sorted((sample / "Training" / label).glob("*.jpg"))[:2]:
            copy = tmp_path / "input" / "Training" / label / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
            photos.append(copy)
    conf = prediction_conf(tmp_path / "lake", weights_seed)
    facts = build_lake(conf, feature_model, photos, k=3)
    predictor = Predictor.load(conf, model=feature_model)
    photos[0].unlink()
    photos[1].write_bytes(photos[2].read_bytes())
    with TestClient(create_app(conf, Service(conf, load=lambda c: predictor))) as client:
        gone = client.get(f"/images/{facts['image_ids'][0]}")
        changed = client.get(f"/images/{facts['image_ids'][1]}")
        kept = client.get(f"/images/{facts['image_ids'][3]}")
    assert gone.status_code == 404 and "is not a file" in gone.json()["error"]
    assert changed.status_code == 404 and "changed since it was ingested" in changed.json()["error"]
    assert kept.status_code == 200


def test_without_a_classifier_health_is_503_until_one_is_published(feature_model, sample, weights_seed, tmp_path):
    conf = prediction_conf(tmp_path / "lake", weights_seed, "serving.reload_seconds=30")
    clock = Clock()
    service = Service(conf, load=lambda c: Predictor.load(c, model=feature_model), clock=clock)
    client = TestClient(create_app(conf, service))
    response = client.get("/health")
    assert response.status_code == 503 and "run `make run`" in response.json()["reason"]
    refused = upload(client, jpeg_bytes())
    assert refused.status_code == 503 and "no classifier is published" in refused.json()["error"]

    photos = [p for label in ("Lemon", "Eggplant") for p in sorted((sample / "Training" / label).glob("*.jpg"))[:3]]
    facts = build_lake(conf, feature_model, photos, k=3, version="clf-a")
    assert client.get("/health").status_code == 503  # the check is not due yet
    clock.now += 30
    assert client.get("/health").json()["classifier_version"] == "clf-a"

    # a newer classifier (same gold, labels in another order) replaces it at the next due check
    meta = {**facts["meta"], "classifier_version": "clf-b", "labels": facts["classes"][::-1]}
    bundle_a = served_arrays(conf, "clf-a")
    write_bundle(conf, meta, {**bundle_a, "coefficients": bundle_a["coefficients"][::-1], "intercepts": bundle_a["intercepts"][::-1]})
    clock.now += 30
    body = client.get("/health").json()
    assert body["classifier_version"] == "clf-b" and "reload_problem" not in body
    eggplant = sorted((sample / "Test" / "Eggplant").glob("*.jpg"))[0]
    assert upload(client, eggplant.read_bytes()).json()["top"][0]["label"] == "Eggplant"

    # a broken newer bundle keeps the loaded one serving, and /health says why
    write_bundle(conf, {**meta, "classifier_version": "clf-c", "k": 99}, synthetic_arrays(meta["labels"], 3))
    clock.now += 30
    body = client.get("/health").json()
    assert body["classifier_version"] == "clf-b" and "clf-c/predictor.npz" in body["reload_problem"]


def served_arrays(conf, version: str) -> dict:
    from pipelines import bundle as bundles
    from pipelines.lakefiles import LakeFiles

    loaded = bundles.load_bundle(LakeFiles(conf), conf, version)
    return {name: getattr(loaded, name) for name in ("mean", "scale", "components", "coefficients", "intercepts")}


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="photo"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "fetch(\"/predict\"" in script.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from another site
    assert client.get("/static/style.css").status_code == 200


def test_serving_on_a_busy_port_is_one_line_naming_the_setting(capsys):
    import socket

    from serving.__main__ import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        code = main(["--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "choose another --port or serving.port" in err
    assert main(["--port", "70000"]) == 2
