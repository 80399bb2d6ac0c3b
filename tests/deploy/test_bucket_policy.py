"""The bucket policy, evaluated: plain HTTP and unencrypted uploads denied, TLS encrypted uploads not."""

from __future__ import annotations

import pytest

from deploy.storage import bucket_policy
from tests.deploy.conftest import BUCKET
from tests.deploy.policy_eval import is_denied

ARN = f"arn:aws:s3:::{BUCKET}"
SSE = "s3:x-amz-server-side-encryption"
TLS = {"aws:SecureTransport": True}


@pytest.fixture
def policy(settings):
    return bucket_policy(settings())  # conf/aws.yaml: SSE-KMS


def test_plain_http_is_denied_for_reads_and_writes(policy):
    assert is_denied(policy, "s3:GetObject", f"{ARN}/lake/silver/part-0.parquet", {"aws:SecureTransport": False})
    assert is_denied(policy, "s3:ListBucket", ARN, {"aws:SecureTransport": False})
    assert is_denied(policy, "s3:PutObject", f"{ARN}/logs/x", {"aws:SecureTransport": False, SSE: "aws:kms"})


def test_unencrypted_upload_is_denied(policy):
    assert is_denied(policy, "s3:PutObject", f"{ARN}/lake/bronze/part-0.parquet", TLS)
    assert is_denied(policy, "s3:PutObject", f"{ARN}/input/fruits-360-sample/a.jpg", TLS)


def test_upload_with_another_encryption_is_denied(policy):
    assert is_denied(policy, "s3:PutObject", f"{ARN}/lake/x", {**TLS, SSE: "AES256"})


def test_tls_encrypted_upload_and_tls_read_are_allowed(policy):
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/lake/bronze/part-0.parquet", {**TLS, SSE: "aws:kms"})
    assert not is_denied(policy, "s3:GetObject", f"{ARN}/lake/bronze/part-0.parquet", TLS)


def test_emr_log_uploads_rely_on_default_encryption(policy):
    """EMR writes logs without the header; they are exempt from the header check, not from TLS."""
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/logs/emr/j-1/steps/s-1/stderr.gz", TLS)


def test_the_evaluator_can_tell_an_open_policy(policy):
    """Without our Deny statements the same requests pass: the checks above are not vacuous."""
    open_policy = {"Statement": [st for st in policy["Statement"] if st["Sid"] == "DenyOtherEncryption"]}
    assert not is_denied(open_policy, "s3:GetObject", f"{ARN}/lake/x", {"aws:SecureTransport": False})
    no_tls_rule = {"Statement": [st for st in policy["Statement"] if st["Sid"] != "DenyInsecureTransport"]}
    assert not is_denied(no_tls_rule, "s3:GetObject", f"{ARN}/lake/x", {"aws:SecureTransport": False})


def test_unknown_condition_operator_is_not_silently_allowed():
    weird = {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4/32"}}}]}
    with pytest.raises(NotImplementedError):
        is_denied(weird, "s3:GetObject", f"{ARN}/x", TLS)


KEY = "arn:aws:kms:eu-west-3:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ID = "s3:x-amz-server-side-encryption-aws-kms-key-id"


def test_with_a_customer_key_uploads_must_name_that_key(settings):
    policy = bucket_policy(settings(f"s3.encryption_key={KEY}"))
    ours = {**TLS, SSE: "aws:kms", KEY_ID: KEY}
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/lake/bronze/part-0.parquet", ours)
    assert is_denied(policy, "s3:PutObject", f"{ARN}/lake/bronze/part-0.parquet", {**ours, KEY_ID: KEY.replace("1234abcd", "ffffffff")})
    assert is_denied(policy, "s3:PutObject", f"{ARN}/lake/bronze/part-0.parquet", {**TLS, SSE: "aws:kms"})  # aws/s3 key
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/logs/emr/j-1/steps/s-1/stderr.gz", TLS)  # logs: bucket default


def test_without_a_customer_key_the_key_id_is_not_constrained(policy):
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/lake/x", {**TLS, SSE: "aws:kms"})
