"""Region (GDPR), bucket and encryption checks that run before any AWS call."""

from __future__ import annotations

import pytest

from deploy.executor import DeployError
from tests.deploy.conftest import BUCKET


def test_defaults_from_conf_aws_yaml(settings):
    s = settings()
    assert s.region == "eu-west-3"
    assert s.bucket == BUCKET
    assert s.sse == "aws:kms"
    assert (s.input_prefix, s.lake_prefix) == ("input/fruits-360-sample", "lake")
    assert s.staging_prefix == "lake/_staging"


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "eu-central-2"])
def test_non_eu_region_is_refused(settings, region):
    with pytest.raises(DeployError, match="not an EU region.*--allow-non-eu"):
        settings(f"aws.region={region}", f"s3.region={region}")


def test_non_eu_region_accepted_only_with_the_flag(aws_env):
    from deploy.settings import load_settings

    s = load_settings([], [], region="us-east-1", allow_non_eu=True)
    assert s.region == "us-east-1" and s.conf["s3.region"] == "us-east-1"


def test_cli_refuses_non_eu_before_any_call(cli, capsys):
    status, out = cli("provision", "--region", "us-east-1", "--dry-run", dry_run_only=True)
    assert status == 2 and out == ""
    assert "not an EU region" in capsys.readouterr().err


def test_s3_region_must_match(settings):
    with pytest.raises(DeployError, match="s3.region 'eu-west-1' differs"):
        settings("s3.region=eu-west-1")


def test_lake_outside_the_bucket_is_refused(settings):
    with pytest.raises(DeployError, match="lake.root .* not a folder of the deployment bucket"):
        settings("lake.root=s3a://someone-else/lake")


def test_invalid_bucket_name(settings):
    with pytest.raises(DeployError, match="aws.bucket 'Bad_Bucket' is not a valid"):
        settings("aws.bucket=Bad_Bucket")


def test_encryption_is_required(settings):
    with pytest.raises(DeployError, match="s3.encryption_algorithm .* SSE-S3 or SSE-KMS"):
        settings("s3.encryption_algorithm=null")


def test_conf_and_overrides_given_to_deploy_are_forwarded_to_the_stages(aws_env, tmp_path):
    """provision grants, package uploads and the jobs read the same conf: every --conf and --set, in order."""
    from deploy.settings import load_settings
    from deploy.spark_args import stage_arguments
    from pipelines.config import CONF_DIR

    extra = CONF_DIR / "aws.yaml"  # any file inside conf/, given by an absolute path
    s = load_settings(["conf/aws.yaml", str(extra)], ["lake.root=s3a://fruits-test-lake/lake-small"], region="eu-west-1")
    assert stage_arguments(s, "silver") == [
        "silver", "--conf", "conf/aws.yaml", "--conf", "conf/aws.yaml",
        "--set", "lake.root=s3a://fruits-test-lake/lake-small",
        "--set", "aws.region=eu-west-1", "--set", "s3.region=eu-west-1",
    ]  # fmt: skip
    assert stage_arguments(load_settings(), "gold") == ["gold", "--conf", "conf/aws.yaml"]


def test_conf_outside_the_conf_folder_is_refused(aws_env, tmp_path, cli, capsys):
    from pipelines.config import CONF_DIR

    outside = tmp_path / "mine.yaml"  # a valid conf, but the jobs on EMR could not read it
    outside.write_text((CONF_DIR / "aws.yaml").read_text())
    status, out = cli("run", "--mode", "serverless", "--conf", str(outside), "--dry-run", dry_run_only=True)
    assert status == 2 and out == ""
    (line,) = capsys.readouterr().err.splitlines()
    assert f"--conf {outside} is outside the project's conf/ folder" in line and "move the file into conf/" in line


@pytest.mark.parametrize("key", ["alias/fruits", "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:eu-west-3:123456789012:alias/fruits"])
def test_a_kms_key_not_given_by_its_arn_is_refused(settings, key):
    """The rehearsal found it: S3A's copies name the key as S3 reports it (its ARN); the bucket
    policy compared that with an alias, and gold's model save was refused."""
    with pytest.raises(DeployError, match="s3.encryption_key .* give the key's ARN"):
        settings("s3.encryption_algorithm=SSE-KMS", f"s3.encryption_key={key}")


def test_a_kms_key_arn_is_accepted(settings):
    from tests.deploy.conftest import KMS_KEY

    assert settings("s3.encryption_algorithm=SSE-KMS", f"s3.encryption_key={KMS_KEY}").kms_key == KMS_KEY


@pytest.mark.parametrize(
    "stages, problem",
    [("[bronze, gold, silver]", "not in the chain's order"), ("[bronze, silver, platinum]", "unknown stage 'platinum'")],
)
def test_aws_stages_are_checked_against_the_stage_registry(settings, stages, problem):
    with pytest.raises(DeployError, match=f"aws.stages: .*{problem}"):
        settings(f"aws.stages={stages}")
