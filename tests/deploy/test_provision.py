"""provision against moto: bucket region, encryption, public access, policy, lifecycle, IAM scoping."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.deploy.conftest import BUCKET, REGION
from tests.deploy.policy_eval import is_denied, statement_applies

ARN = f"arn:aws:s3:::{BUCKET}"


@pytest.fixture
def provisioned(service_policy, cli):
    status, out = cli("provision", "--set", service_policy)
    assert status == 0, out
    return out


def s3():
    return boto3.client("s3", region_name=REGION)


def iam():
    return boto3.client("iam", region_name=REGION)


def test_bucket_in_the_conf_region(provisioned):
    assert s3().get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION


def test_default_encryption_kms_with_bucket_key(provisioned):
    rule = s3().get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["BucketKeyEnabled"] is True


def test_default_encryption_sse_s3(service_policy, cli):
    assert cli("provision", "--set", service_policy, "--set", "s3.encryption_algorithm=SSE-S3")[0] == 0
    rule = s3().get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    policy = json.loads(s3().get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert is_denied(policy, "s3:PutObject", f"{ARN}/lake/x", {"aws:SecureTransport": True, "s3:x-amz-server-side-encryption": "aws:kms"})
    assert not is_denied(policy, "s3:PutObject", f"{ARN}/lake/x", {"aws:SecureTransport": True, "s3:x-amz-server-side-encryption": "AES256"})


def test_public_access_fully_blocked(provisioned):
    block = s3().get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    rules = s3().get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_policy_statements(provisioned):
    policy = json.loads(s3().get_bucket_policy(Bucket=BUCKET)["Policy"])
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    assert set(by_sid) == {"DenyInsecureTransport", "DenyUnencryptedObjectUploads", "DenyOtherEncryption"}
    assert all(st["Effect"] == "Deny" and st["Principal"] == "*" for st in by_sid.values())
    assert by_sid["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert by_sid["DenyInsecureTransport"]["Resource"] == [ARN, f"{ARN}/*"]


def test_lifecycle_expires_logs_tmp_and_staging(provisioned):
    rules = {r["ID"]: r for r in s3().get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules["expire-logs"]["Filter"]["Prefix"] == "logs/" and rules["expire-logs"]["Expiration"]["Days"] == 30
    assert rules["expire-tmp"]["Filter"]["Prefix"] == "tmp/" and rules["expire-tmp"]["Expiration"]["Days"] == 7
    assert rules["expire-wap-staging"]["Filter"]["Prefix"] == "lake/_staging/"
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2
    # nothing expires the lake or the input
    assert not any(r["Filter"]["Prefix"] in ("lake/", "input/", "") and "Expiration" in r for r in rules.values())


def _inline(role: str, name: str) -> dict:
    document = iam().get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    return document if isinstance(document, dict) else json.loads(document)


@pytest.mark.parametrize("role", ["fruits-emr-ec2", "fruits-emr-serverless-job"])
def test_job_roles_scoped_to_bucket_prefixes(provisioned, role):
    policy = _inline(role, "fruits-data-access")
    s3_statements = [st for st in policy["Statement"] if any(a.startswith("s3:") for a in _list(st["Action"]))]
    assert s3_statements
    for st in s3_statements:
        for resource in _list(st["Resource"]):
            assert resource != "*" and not resource.startswith("arn:aws:s3:::*"), st
            assert resource == ARN or resource.startswith(f"{ARN}/"), st
            if resource != ARN:  # objects: under a named prefix (or its bare key), never the whole bucket
                assert resource != f"{ARN}/*" and resource.split("/", 1)[1].split("/")[0] in {"code", "input", "lake", "tmp", "logs"}, st
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    assert by_sid["ReadCodeAndInput"]["Action"] == "s3:GetObject"  # input is read-only
    assert f"{ARN}/input/fruits-360-sample/*" in by_sid["ReadCodeAndInput"]["Resource"]
    assert f"{ARN}/input/fruits-360-sample/*" not in by_sid["ReadWriteLakeAndTmp"]["Resource"]
    assert "lake/*" in by_sid["ListOwnPrefixes"]["Condition"]["StringLike"]["s3:prefix"]


def test_trust_policies(provisioned):
    principals = {
        role: iam().get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
        for role in ("fruits-emr-service", "fruits-emr-ec2", "fruits-emr-serverless-job")
    }
    assert principals == {
        "fruits-emr-service": "elasticmapreduce.amazonaws.com",
        "fruits-emr-ec2": "ec2.amazonaws.com",
        "fruits-emr-serverless-job": "emr-serverless.amazonaws.com",
    }


def test_service_role_gets_the_managed_emr_policy(aws_env, monkeypatch, cli):
    from moto import mock_aws

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    with mock_aws():
        assert cli("provision")[0] == 0
        attached = iam().list_attached_role_policies(RoleName="fruits-emr-service")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]


def test_service_role_passes_only_the_instance_role(provisioned):
    (statement,) = _inline("fruits-emr-service", "fruits-pass-instance-role")["Statement"]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"].endswith(":role/fruits-emr-ec2")
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_instance_profile_named_like_its_role(provisioned):
    profile = iam().get_instance_profile(InstanceProfileName="fruits-emr-ec2")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["fruits-emr-ec2"]


def test_provision_is_idempotent(provisioned, cli, service_policy):
    status, out = cli("provision", "--set", service_policy)
    assert status == 0, out
    assert "kept as is" in out
    assert len(iam().get_instance_profile(InstanceProfileName="fruits-emr-ec2")["InstanceProfile"]["Roles"]) == 1


def _list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("role", ["fruits-emr-ec2", "fruits-emr-serverless-job"])
def test_job_roles_may_register_the_lake_tables_in_glue_and_nothing_else(provisioned, role):
    """conf/aws.yaml turns catalog.glue on: the catalog step needs Glue rights on its database, and the
    walkthrough notebook (run as these roles from EMR Studio) on its own, catalog.notebook_database."""
    policy = _inline(role, "fruits-data-access")
    glue = [st for st in policy["Statement"] if any(a.startswith("glue:") for a in _list(st["Action"]))]
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    arn = f"arn:aws:glue:{REGION}:{account}"

    def allowed(action, resource):
        return any(statement_applies(st, action, resource, {}) for st in glue)

    assert allowed("glue:CreateTable", f"{arn}:table/fruits/gold")
    assert allowed("glue:GetTables", f"{arn}:database/fruits")
    assert allowed("glue:GetDatabase", f"{arn}:database/default")
    assert allowed("glue:CreateTable", f"{arn}:table/fruits_notebook/gold")
    assert allowed("glue:CreateDatabase", f"{arn}:database/fruits_notebook")
    assert not allowed("glue:CreateTable", f"{arn}:table/default/gold")
    assert not allowed("glue:DeleteTable", f"{arn}:table/other_team/orders")
    assert not allowed("glue:DeleteDatabase", f"{arn}:database/fruits")
    assert all(r != "*" and not r.startswith("arn:aws:glue:*") for st in glue for r in _list(st["Resource"]))


def test_an_existing_bucket_in_another_region_is_refused(service_policy, cli, capsys):
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    status, out = cli("provision", "--set", service_policy)
    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"bucket {BUCKET} already exists in eu-west-1, not in aws.region eu-west-3" in line
    assert "s3.put_bucket_policy" not in out  # nothing applied to the foreign bucket


def test_an_existing_bucket_in_the_conf_region_is_kept(service_policy, cli):
    s3().create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    status, out = cli("provision", "--set", service_policy)
    assert status == 0, out
    assert "s3.get_bucket_location" in out and "kept as is" in out
