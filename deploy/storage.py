"""The bucket: EU region, default encryption, no public access, TLS and encryption enforced, expiry.

Pure functions build each request; `provision_bucket` sends them in order. The bucket policy is the
last line of defence for GDPR: whatever a client or a job is configured to do, S3 itself refuses a
plain-HTTP request and an upload that does not ask for the bucket's encryption.
"""

from __future__ import annotations

import json

from deploy.executor import Executor
from deploy.settings import Settings

SSE_HEADER_KEY = "s3:x-amz-server-side-encryption"


def create_bucket_request(s: Settings) -> dict:
    request: dict = {"Bucket": s.bucket}
    # us-east-1 is the one region that rejects a LocationConstraint (only reachable with --allow-non-eu).
    if s.region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
    return request


def encryption_request(s: Settings) -> dict:
    rule: dict = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": s.sse}}
    if s.sse == "aws:kms":
        if s.kms_key:
            rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] = s.kms_key
        # One data key per bucket instead of one KMS request per object: the same protection, far
        # fewer KMS calls (cost and throttling) for a lake of many small files.
        rule["BucketKeyEnabled"] = True
    return {"Bucket": s.bucket, "ServerSideEncryptionConfiguration": {"Rules": [rule]}}


def public_access_block_request(s: Settings) -> dict:
    return {
        "Bucket": s.bucket,
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    }


def ownership_request(s: Settings) -> dict:
    """ACLs off: access is decided by IAM and the bucket policy only."""
    return {"Bucket": s.bucket, "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}}


def bucket_policy(s: Settings) -> dict:
    """Deny plain HTTP, uploads without the encryption header, and uploads asking another encryption.

    The encryption statements leave out the logs prefix: EMR and EMR Serverless write their logs
    without the header, and the bucket's default encryption still encrypts them. Everything the jobs
    and the deploy tool write (code, input, lake, tmp) must ask for the bucket's encryption.
    """
    objects = f"{s.bucket_arn}/*"
    exempt = [f"{s.bucket_arn}/{s.logs_prefix}/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [s.bucket_arn, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "DenyUnencryptedObjectUploads",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "NotResource": exempt,
                "Condition": {"Null": {SSE_HEADER_KEY: "true"}},
            },
            {
                "Sid": "DenyOtherEncryption",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "NotResource": exempt,
                "Condition": {"StringNotEquals": {SSE_HEADER_KEY: s.sse}},
            },
        ],
    }


def lifecycle_request(s: Settings) -> dict:
    conf = s.conf
    expiring = [
        ("expire-logs", s.logs_prefix, conf["aws.lifecycle.logs_days"]),
        ("expire-tmp", s.tmp_prefix, conf["aws.lifecycle.tmp_days"]),
        ("expire-wap-staging", s.staging_prefix, conf["aws.lifecycle.tmp_days"]),
    ]
    rules = [
        {"ID": rule_id, "Filter": {"Prefix": f"{prefix}/"}, "Status": "Enabled", "Expiration": {"Days": days}}
        for rule_id, prefix, days in expiring
    ]
    rules.append(
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": conf["aws.lifecycle.abort_multipart_days"]},
        }
    )
    return {"Bucket": s.bucket, "LifecycleConfiguration": {"Rules": rules}}


def provision_bucket(ex: Executor, s: Settings) -> None:
    """Create the bucket if needed and (re)apply every setting: safe to run again."""
    ex.call("s3", "create_bucket", tolerate=("BucketAlreadyOwnedByYou",), **create_bucket_request(s))
    ex.call("s3", "put_public_access_block", **public_access_block_request(s))
    ex.call("s3", "put_bucket_ownership_controls", **ownership_request(s))
    ex.call("s3", "put_bucket_encryption", **encryption_request(s))
    ex.call("s3", "put_bucket_policy", Bucket=s.bucket, Policy=json.dumps(bucket_policy(s)))
    ex.call("s3", "put_bucket_lifecycle_configuration", **lifecycle_request(s))


def delete_bucket(ex: Executor, s: Settings) -> None:
    """Empty the bucket (lake, input, logs: everything) and delete it. Only on an explicit flag."""
    keys = [obj["Key"] for obj in ex.pages("s3", "list_objects_v2", "Contents", Bucket=s.bucket)]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        ex.call("s3", "delete_objects", Bucket=s.bucket, Delete={"Objects": batch, "Quiet": True})
    ex.call("s3", "delete_bucket", Bucket=s.bucket)
