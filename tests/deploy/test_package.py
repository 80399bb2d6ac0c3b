"""package: reproducible code archive, uploads with encryption, skipping objects already there.

The bucket here is created bare, without `provision`: moto 5.1.22 applies a bucket policy's Deny
statements without evaluating their conditions, so with our policy it refuses every upload. The
policy itself is evaluated in test_bucket_policy.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import boto3
import pytest

from deploy.package import LocalFile, build_code_archive, upload_decision
from tests.deploy.conftest import BUCKET, REGION, WEIGHTS_KEY, weights_args


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "images"
    for split, label, name, data in [
        ("Training", "Apple Braeburn", "0_100.jpg", b"\xff\xd8apple"),
        ("Training", "Banana", "1_100.jpg", b"\xff\xd8banana"),
        ("Test", "Banana", "2_100.jpg", b"\xff\xd8banana-test"),
    ]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        (root / split / label / name).write_bytes(data)
    return root


@pytest.fixture
def package_args(tmp_path, dataset):
    env = tmp_path / "fruits-env.tar.gz"
    env.write_bytes(b"v" * (9 << 20))  # above boto3's 8 MB threshold: a multipart upload, ETag not an MD5
    return [
        "--set", f"aws.package.dist_dir={tmp_path / 'dist'}",
        "--set", f"aws.package.env_archive={env}",
        *weights_args(tmp_path),
        "--set", f"aws.package.dataset_source={dataset}",
    ]  # fmt: skip


@pytest.fixture
def bucket(moto_aws):
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )


def _objects() -> dict[str, dict]:
    s3 = boto3.client("s3", region_name=REGION)
    return {o["Key"]: o for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_code_archive_is_reproducible_and_complete(tmp_path):
    from pipelines.config import PROJECT_ROOT

    dirs = [PROJECT_ROOT / "pipelines", PROJECT_ROOT / "conf", tmp_path / "absent"]
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    assert build_code_archive(dirs, first) == [str(tmp_path / "absent")]
    build_code_archive(dirs, second)
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert {"pipelines/config.py", "conf/base.yaml", "conf/aws.yaml"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_upload_decision():
    local = LocalFile(path=Path("x"), key="k", size=10, md5="abc")
    assert upload_decision(local, None) == "upload"
    assert upload_decision(local, {"Size": 11, "ETag": '"abc"'}) == "upload"
    assert upload_decision(local, {"Size": 10, "ETag": '"abc"'}) == "skip"
    assert upload_decision(local, {"Size": 10, "ETag": '"kms-or-multipart-2"'}) == "check"


def test_package_uploads_code_env_and_dataset_encrypted(bucket, cli, package_args):
    status, out = cli("package", *package_args)
    assert status == 0, out
    keys = set(_objects())
    assert {"code/fruits-code.zip", "code/entry.py", "code/env/fruits-env.tar.gz"} <= keys
    assert "input/fruits-360-sample/Training/Apple Braeburn/0_100.jpg" in keys
    assert "input/fruits-360-sample/Test/Banana/2_100.jpg" in keys
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=BUCKET, Key="code/entry.py")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["Metadata"]["md5"]
    assert "dataset: 3 uploaded, 0 already there" in out


def test_second_package_skips_everything_then_uploads_only_the_change(bucket, cli, package_args, dataset):
    assert cli("package", *package_args)[0] == 0
    status, out = cli("package", *package_args)
    assert status == 0
    assert "code: 0 uploaded, 3 already there" in out
    assert "s3.head_object" in out  # the multipart env archive was recognised by its stored MD5
    assert "dataset: 0 uploaded, 3 already there" in out
    assert "upload_file" not in out
    (dataset / "Training" / "Banana" / "1_100.jpg").write_bytes(b"\xff\xd8BANANA")  # same size, new bytes
    status, out = cli("package", *package_args)
    assert "dataset: 1 uploaded, 2 already there" in out


def test_missing_env_archive_says_how_to_build_it(bucket, cli, package_args, tmp_path, capsys):
    args = [*package_args, "--set", f"aws.package.env_archive={tmp_path / 'nope.tar.gz'}"]
    status, _ = cli("package", *args)
    assert status == 2
    assert "deploy/build_env.sh" in capsys.readouterr().err


def test_skip_env_and_data(bucket, cli, package_args):
    status, out = cli("package", "--skip-env", "--skip-data", *package_args)
    assert status == 0, out
    assert set(_objects()) == {"code/fruits-code.zip", "code/entry.py", WEIGHTS_KEY}


def test_weights_uploaded_once_to_the_key_the_jobs_read(bucket, cli, package_args, settings):
    assert cli("package", "--skip-env", "--skip-data", *package_args)[0] == 0
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=WEIGHTS_KEY)["Body"].read()
    assert body == b"stand-in for the MobileNetV2 weights"
    assert f"s3a://{BUCKET}/{WEIGHTS_KEY}" == settings().conf["silver.weights_file"]  # what silver reads on EMR
    status, out = cli("package", "--skip-env", "--skip-data", *package_args)
    assert status == 0 and "weights: already there" in out


def test_no_local_weights_is_one_line(bucket, cli, package_args, tmp_path, capsys):
    args = [*package_args, "--set", f"silver.keras_home={tmp_path / 'empty'}", "--set", "silver.weights_url=https://example.invalid/x/"]
    status, _ = cli("package", "--skip-env", "--skip-data", *args)
    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "the MobileNetV2 weights to upload to silver.weights_file" in line and "KERAS_HOME" in line
