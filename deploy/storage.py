"""The bucket: EU region, default encryption, no public access, TLS and encryption enforced, expiry.

Pure functions build each request; `provision_bucket` sends them in order. The bucket policy is the
last line of defence for GDPR: whatever a client or a job is configured to do, S3 itself refuses a
plain-HTTP request and an upload that does not ask for the bucket's encryption.
"""

from __future__ import annotations

import json

from deploy.executor import DeployError, Executor
from deploy.settings import Settings

SSE_HEADER_KEY = "s3:x-amz-server-side-encryption"
KMS_KEY_HEADER_KEY = "s3:x-amz-server-side-encryption-aws-kms-key-id"
# GetBucketLocation's answers that are not region names: none for us-east-1, "EU" for old eu-west-1 buckets.
_LEGACY_LOCATIONS = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}


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

    With a customer KMS key (s3.encryption_key), uploads naming another key (or none) are denied
    too: the algorithm alone would let a writer pick a key the owner cannot revoke.
    The encryption statements leave out the logs prefix: EMR and EMR Serverless write their logs
    without the header, and the bucket's default encryption still encrypts them. Everything the jobs
    and the deploy tool write (code, input, lake, tmp) must ask for the bucket's encryption.
    """
    objects = f"{s.bucket_arn}/*"
    exempt = [f"{s.bucket_arn}/{s.logs_prefix}/*"]
    key_rule = [
        {
            "Sid": "DenyOtherKmsKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "NotResource": exempt,
            "Condition": {"StringNotEquals": {KMS_KEY_HEADER_KEY: s.kms_key}},
        }
    ]
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
            *(key_rule if s.kms_key else []),
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
    created = ex.call("s3", "create_bucket", tolerate=("BucketAlreadyOwnedByYou",), **create_bucket_request(s))
    if created is None:  # ours already: it must be where the conf says the data lives
        check_bucket_region(ex, s)
    ex.call("s3", "put_public_access_block", **public_access_block_request(s))
    ex.call("s3", "put_bucket_ownership_controls", **ownership_request(s))
    ex.call("s3", "put_bucket_encryption", **encryption_request(s))
    ex.call("s3", "put_bucket_policy", Bucket=s.bucket, Policy=json.dumps(bucket_policy(s)))
    ex.call("s3", "put_bucket_lifecycle_configuration", **lifecycle_request(s))


def check_bucket_region(ex: Executor, s: Settings) -> None:
    """Refuse a bucket of ours that lies in another region than aws.region (GDPR, and the jobs' endpoint)."""
    constraint = ex.call("s3", "get_bucket_location", Bucket=s.bucket)["LocationConstraint"]
    region = _LEGACY_LOCATIONS.get(constraint, constraint)
    if region != s.region:
        raise DeployError(
            f"bucket {s.bucket} already exists in {region}, not in aws.region {s.region}: choose another bucket "
            f"name (FRUITS_BUCKET) or set aws.region to {region} if that region is acceptable"
        )


def delete_bucket(ex: Executor, s: Settings) -> None:
    """Empty the bucket (lake, input, logs: everything) and delete it. Only on an explicit flag."""
    keys = [obj["Key"] for obj in ex.pages("s3", "list_objects_v2", "Contents", Bucket=s.bucket)]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        ex.call("s3", "delete_objects", Bucket=s.bucket, Delete={"Objects": batch, "Quiet": True})
    ex.call("s3", "delete_bucket", Bucket=s.bucket)
