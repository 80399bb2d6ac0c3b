"""The job roles' data policy, evaluated on the requests S3A makes (deploy/iam.py: data_policy).

S3A's getFileStatus(dir) is a HEAD of the bare key `dir`, then a LIST of `dir/`; S3 answers a HEAD
of a missing key with 404 only to a caller allowed s3:ListBucket (the request carries no s3:prefix),
with 403 otherwise, and S3A fails on a 403. The evaluator is tests/deploy/policy_eval.py; what AWS
itself decides is not shown here (no AWS in CI).
"""

from __future__ import annotations

import pytest

from deploy.iam import data_policy
from tests.deploy.conftest import BUCKET
from tests.deploy.policy_eval import is_allowed

ARN = f"arn:aws:s3:::{BUCKET}"
TLS = {"aws:SecureTransport": True}


@pytest.fixture
def policy(settings):
    return data_policy(settings(), "123456789012")


def head_answers_not_found(policy, key: str) -> bool:
    """A HEAD of a missing key gets 404 (S3A: 'not there') rather than 403 (S3A: fails)."""
    return is_allowed(policy, "s3:GetObject", f"{ARN}/{key}", TLS) and is_allowed(policy, "s3:ListBucket", ARN, TLS)


@pytest.mark.parametrize("folder", ["input/fruits-360-sample", "lake", "code", "tmp"])
def test_s3a_get_file_status_of_each_folder_is_allowed(policy, folder):
    assert head_answers_not_found(policy, folder)
    assert is_allowed(policy, "s3:ListBucket", ARN, {**TLS, "s3:prefix": f"{folder}/"})


def test_lake_is_read_write_input_read_only(policy):
    assert is_allowed(policy, "s3:PutObject", f"{ARN}/lake/bronze/_delta_log/00000.json", TLS)
    assert is_allowed(policy, "s3:GetObject", f"{ARN}/input/fruits-360-sample/Training/Banana/0_100.jpg", TLS)
    assert not is_allowed(policy, "s3:PutObject", f"{ARN}/input/fruits-360-sample/Training/Banana/x.jpg", TLS)
    assert not is_allowed(policy, "s3:DeleteObject", f"{ARN}/input/fruits-360-sample/Training/Banana/0_100.jpg", TLS)


def test_folder_keys_are_read_only_and_nothing_else_opens(policy):
    for folder in ("input/fruits-360-sample", "lake", "code"):
        assert not is_allowed(policy, "s3:PutObject", f"{ARN}/{folder}", TLS)
    assert not is_allowed(policy, "s3:GetObject", f"{ARN}/input/fruits-360-sample-other/a.jpg", TLS)
    assert not is_allowed(policy, "s3:GetObject", f"{ARN}/lakeside", TLS)
    assert not is_allowed(policy, "s3:GetObject", f"{ARN}/logs/emr/j-1/steps/s-1/stderr.gz", TLS)
    # listings: only under the five prefixes, never the bucket root or another folder
    assert not is_allowed(policy, "s3:ListBucket", ARN, {**TLS, "s3:prefix": ""})
    assert not is_allowed(policy, "s3:ListBucket", ARN, {**TLS, "s3:prefix": "other/"})


def test_weights_outside_the_code_prefix_get_a_read_right_on_their_key_only(settings):
    default = data_policy(settings(), "123456789012")
    assert "ReadModelWeights" not in {st["Sid"] for st in default["Statement"]}  # under code/: already readable
    assert is_allowed(default, "s3:GetObject", f"{ARN}/code/models/mobilenet.h5", TLS)
    moved = data_policy(settings(f"silver.weights_file=s3a://{BUCKET}/models/mobilenet.h5"), "123456789012")
    assert is_allowed(moved, "s3:GetObject", f"{ARN}/models/mobilenet.h5", TLS)
    assert not is_allowed(moved, "s3:GetObject", f"{ARN}/models/other.h5", TLS)


def test_retention_adds_delete_in_the_input_and_nothing_else(settings):
    kept = data_policy(settings("bronze.retention_days=365"), "123456789012")
    photo = f"{ARN}/input/fruits-360-sample/Training/Banana/0_100.jpg"
    assert is_allowed(kept, "s3:DeleteObject", photo, TLS)
    assert not is_allowed(kept, "s3:PutObject", photo, TLS)
    assert not is_allowed(kept, "s3:DeleteObject", f"{ARN}/code/fruits-code.zip", TLS)
