"""The prediction path's reads from a lake on S3 (the local server, conf/s3-local.yaml): the classifier
bundle, gold's export and a lake image, through pyarrow's S3 client built from the s3.* settings."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipelines import bundle as bundles
from pipelines.config import load_conf
from pipelines.images import sha256_hex
from pipelines.lakefiles import LakeFiles
from pipelines.predict import Predictor, check_photo
from tests.serving.lakes import export_table, synthetic_arrays, synthetic_meta, write_bundle, write_export

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_lake(s3_bucket):
    """A new bucket and conf/s3-local.yaml pointing at it (no Spark session: nothing here needs one)."""
    return s3_bucket.conf, s3_bucket.client, s3_bucket.bucket


def upload_folder(client, bucket: str, folder, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())


def test_bundle_index_and_images_are_read_from_s3(s3_lake, sample, tmp_path):
    conf, client, bucket = s3_lake
    photos = [sorted((sample / "Training" / label).glob("*.jpg"))[0] for label in ("Kiwi", "Lemon")]
    keys = [f"input/Training/{p.parent.name}/{p.name}" for p in photos]
    for photo, key in zip(photos, keys):
        client.put_object(Bucket=bucket, Key=key, Body=photo.read_bytes())
    ids = [sha256_hex(check_photo(p.read_bytes(), 10**8).content) for p in photos]

    # the files the stages would write, made on local disk through the same layout, then uploaded
    staged = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
    labels = ["Kiwi", "Lemon"]
    pca = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    write_export(staged, "g/1", "r:1", export_table(ids, labels, ["Training"] * 2, [f"s3a://{bucket}/{k}" for k in keys], pca))
    write_export(staged, "g/1", "r:2", export_table(["f" * 64], ["Kiwi"], ["Training"], [None], pca[:1]), complete=False)
    write_bundle(staged, synthetic_meta("clf-1", "g/1", labels, 3), synthetic_arrays(labels, 3))
    upload_folder(client, bucket, tmp_path / "lake", "lake")

    files = LakeFiles(conf)
    assert conf.path("lake.root") == f"s3a://{bucket}/lake"
    bundle = bundles.load_bundle(files, conf, bundles.current_version(files, conf))
    assert bundle.labels == labels and bundle.components.shape == (1280, 3)
    index = bundles.load_index(files, conf, "g/1", 3)
    assert sorted(index.image_ids) == index.image_ids == sorted(ids)  # the incomplete part is left out
    assert index.parts == frozenset({"run_id=r%3A1"})
    np.testing.assert_array_equal(index.matrix[index.row(ids[0])], pca[0])

    predictor = Predictor(conf, files, bundle, index, bundles.load_cards(conf), model=None)
    content, media_type = predictor.image(ids[1])
    assert media_type == "image/jpeg" and hashlib.sha256(content).hexdigest() == ids[1]
    client.delete_object(Bucket=bucket, Key=keys[0])
    with pytest.raises(FileNotFoundError, match="is not a file"):
        predictor.image(ids[0])
    assert predictor.refreshed() is predictor  # same version, same parts: nothing reloaded
    client.delete_object(Bucket=bucket, Key="lake/_models/classifier/current.json")
    with pytest.raises(bundles.NoClassifier, match=f"s3a://{bucket}/lake/_models/classifier/current.json"):
        predictor.refreshed()
