"""Fixtures for the deploy tool: fake AWS credentials, moto, and a CLI runner capturing output."""

from __future__ import annotations

import io

import pytest

BUCKET = "fruits-test-lake"
REGION = "eu-west-3"
# A customer KMS key ARN (EMR on EC2 refuses to start without one: its disks are encrypted with it).
KMS_KEY = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
WITH_KEY = f"s3.encryption_key={KMS_KEY}"


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials (moto needs some; real ones must never be used) and the test bucket name."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FRUITS_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def moto_aws(aws_env):
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def service_policy(moto_aws) -> str:
    """A stand-in for AWS's managed EMR service policy, as `--set` override.

    moto knows the real one only when it loads all AWS managed policies (MOTO_IAM_LOAD_MANAGED_POLICIES),
    which costs seconds per test; test_provision checks the real ARN once that way.
    """
    import boto3

    arn = boto3.client("iam", region_name=REGION).create_policy(
        PolicyName="AmazonEMRServicePolicy_v2_standin",
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}',
    )["Policy"]["Arn"]
    return f"aws.iam.emr_service_policy_arn={arn}"


def _no_client(service, region):
    raise AssertionError(f"a {service} client was created")


@pytest.fixture
def cli(aws_env):
    """cli(*args, dry_run_only=False) -> (exit status, output). dry_run_only: any AWS client fails the test."""
    from deploy.__main__ import main

    def run(*args: str, dry_run_only: bool = False) -> tuple[int, str]:
        out = io.StringIO()
        status = main(list(args), out=out, client_factory=_no_client if dry_run_only else None)
        return status, out.getvalue()

    return run


@pytest.fixture
def settings(aws_env):
    """settings(*overrides) -> deploy Settings from conf/aws.yaml."""
    from deploy.settings import load_settings

    return lambda *overrides: load_settings([], list(overrides))


WEIGHTS_KEY = "code/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def weights_args(tmp_path) -> list[str]:
    """--set options pointing package at a stand-in weights file in a Keras cache under tmp_path."""
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / WEIGHTS_KEY.rsplit("/", 1)[1]).write_bytes(b"stand-in for the MobileNetV2 weights")
    return ["--set", f"silver.keras_home={tmp_path / 'keras'}", "--set", f"silver.model_seed_dir={tmp_path / 'seed'}"]
