"""The job role's S3 policy, as deploy/iam.py builds it, enforced by the real local S3 server.

What S3A does on EMR is tried here with the job user's keys: probes of the bare folder keys (a
HEAD answered 403 instead of 404 fails `exists()`), reads of code and input, writes of the lake
with the bucket's encryption, and what must stay refused.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from deploy.settings import load_settings
from rehearsal import stand_ins
from rehearsal.s3_server import BUCKET_ENV, ENDPOINT_ENV, LocalS3Server, new_bucket_name
from tests.s3_binary import server_binary_or_skip

pytestmark = pytest.mark.s3
KMS_KEY = "arn:aws:kms:fruits-rehearsal"  # conf/rehearse.yaml


@pytest.fixture(scope="module")
def job(aws_env_module):
    binary = server_binary_or_skip()
    with LocalS3Server("eu-west-3", binary, kms_key_name=KMS_KEY) as server:
        bucket = new_bucket_name()
        aws_env_module.setenv(BUCKET_ENV, bucket)
        aws_env_module.setenv(ENDPOINT_ENV, server.endpoint)
        s = load_settings(stand_ins.AWS_CONFS)
        server.create_bucket(bucket)
        keys = server.add_user(stand_ins.JOB_USER, stand_ins.job_user_policy(s))
        root = server.client()
        root.put_object(Bucket=bucket, Key=f"{s.input_prefix}/Training/Apple 1/a.jpg", Body=b"jpeg")
        root.put_object(Bucket=bucket, Key=f"{s.code_prefix}/entry.py", Body=b"print()")
        yield s, server.client(keys=keys)


@pytest.fixture(scope="module")
def aws_env_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AWS_PROFILE", raising=False)
        yield patch


def status(call) -> int:
    try:
        return int(call()["ResponseMetadata"]["HTTPStatusCode"])
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def test_s3a_folder_probes_get_404_not_403(job):
    s, user = job
    for prefix in (s.input_prefix, s.lake_prefix, f"{s.lake_prefix}/bronze", s.tmp_prefix):
        assert status(lambda: user.head_object(Bucket=s.bucket, Key=prefix)) == 404, prefix  # noqa: B023
        listing = user.list_objects_v2(Bucket=s.bucket, Prefix=f"{prefix}/", Delimiter="/", MaxKeys=2)
        assert listing["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_code_and_input_are_readable_not_writable(job):
    s, user = job
    assert user.get_object(Bucket=s.bucket, Key=f"{s.input_prefix}/Training/Apple 1/a.jpg")["Body"].read() == b"jpeg"
    assert user.get_object(Bucket=s.bucket, Key=f"{s.code_prefix}/entry.py")["Body"].read() == b"print()"
    encrypted = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}
    assert status(lambda: user.put_object(Bucket=s.bucket, Key=f"{s.input_prefix}/x.jpg", Body=b"x", **encrypted)) == 403


def test_lake_writes_need_the_buckets_encryption_and_key(job):
    s, user = job
    key = f"{s.lake_prefix}/bronze/part-0.parquet"
    assert status(lambda: user.put_object(Bucket=s.bucket, Key=key, Body=b"x")) == 403
    assert status(lambda: user.put_object(Bucket=s.bucket, Key=key, Body=b"x", ServerSideEncryption="AES256")) == 403
    assert status(lambda: user.put_object(Bucket=s.bucket, Key=key, Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId="other")) == 403
    assert status(lambda: user.put_object(Bucket=s.bucket, Key=key, Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=KMS_KEY)) == 200
    assert user.get_object(Bucket=s.bucket, Key=key)["Body"].read() == b"x"
    assert status(lambda: user.delete_object(Bucket=s.bucket, Key=key)) == 204


def test_a_copy_as_s3a_makes_it_is_allowed(job):
    """S3A renames by copying and names the source object's key as S3 reports it (HADOOP's
    copyEncryptionParameters); with the key written otherwise in conf, the key-id rule refused it
    and gold's model save failed on the cluster."""
    s, user = job
    source, target = f"{s.lake_prefix}/_models/_temporary/part-0", f"{s.lake_prefix}/_models/part-0"
    user.put_object(Bucket=s.bucket, Key=source, Body=b"model", ServerSideEncryption="aws:kms", SSEKMSKeyId=KMS_KEY)
    reported = user.head_object(Bucket=s.bucket, Key=source)["SSEKMSKeyId"]
    assert reported == s.kms_key
    copy = {"Bucket": s.bucket, "Key": target, "CopySource": {"Bucket": s.bucket, "Key": source}}
    assert status(lambda: user.copy_object(**copy, ServerSideEncryption="aws:kms", SSEKMSKeyId=reported)) == 200


def test_nothing_outside_the_prefixes(job):
    s, user = job
    assert status(lambda: user.get_object(Bucket=s.bucket, Key="elsewhere/file")) == 403
    assert status(lambda: user.list_objects_v2(Bucket=s.bucket, Prefix="elsewhere/")) == 403
