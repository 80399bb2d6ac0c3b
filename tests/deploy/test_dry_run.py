"""--dry-run on every command prints each AWS call with its parameters and creates no client."""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import BUCKET, WEIGHTS_KEY, WITH_KEY, weights_args


@pytest.fixture
def package_args(tmp_path):
    data = tmp_path / "images" / "Training" / "Banana"
    data.mkdir(parents=True)
    (data / "0_100.jpg").write_bytes(b"\xff\xd8")
    env = tmp_path / "env.tar.gz"
    env.write_bytes(b"env")
    return [
        "--set", f"aws.package.dist_dir={tmp_path / 'dist'}",
        "--set", f"aws.package.env_archive={env}",
        *weights_args(tmp_path),
        "--set", f"aws.package.dataset_source={tmp_path / 'images'}",
    ]  # fmt: skip


def _calls(out: str) -> list[tuple[str, dict]]:
    calls = []
    for line in out.splitlines():
        if line.startswith("[dry-run] ") and "{" in line and not line.startswith("[dry-run] then"):
            name, params = line[len("[dry-run] ") :].split(" ", 1)
            calls.append((name, json.loads(params)))
    return calls


COMMANDS = [
    ["provision"],
    ["run", "--mode", "cluster", "--set", WITH_KEY],
    ["run", "--mode", "serverless"],
    ["status"],
    ["logs", "--mode", "cluster"],
    ["logs", "--mode", "serverless"],
    ["teardown", "--delete-bucket", "--delete-roles"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_dry_run_makes_no_call(cli, command):
    status, out = cli(*command, "--dry-run", dry_run_only=True)
    assert status == 0, out
    assert _calls(out), out


def test_dry_run_package_prints_uploads(cli, package_args):
    status, out = cli("package", "--dry-run", *package_args, dry_run_only=True)
    assert status == 0, out
    uploads = [params for name, params in _calls(out) if name == "s3.upload_file"]
    assert {u["Key"] for u in uploads} == {
        "code/fruits-code.zip",
        "code/entry.py",
        "code/env/env.tar.gz",
        "input/fruits-360-sample/Training/Banana/0_100.jpg",
        WEIGHTS_KEY,  # the driver on EMR reads silver.weights_file there, not the internet
    }
    assert all(u["ExtraArgs"]["ServerSideEncryption"] == "aws:kms" for u in uploads)


def test_dry_run_provision_is_a_complete_plan(cli):
    calls = dict(_calls(cli("provision", "--dry-run", dry_run_only=True)[1]))
    assert calls["s3.create_bucket"] == {"Bucket": BUCKET, "CreateBucketConfiguration": {"LocationConstraint": "eu-west-3"}}
    assert {"s3.put_public_access_block", "s3.put_bucket_encryption", "s3.put_bucket_policy",
            "s3.put_bucket_lifecycle_configuration", "iam.create_role", "iam.put_role_policy",
            "iam.create_instance_profile", "iam.add_role_to_instance_profile"} <= set(calls)  # fmt: skip


def test_dry_run_cluster_plan_embeds_one_step_per_stage(cli):
    calls = dict(_calls(cli("run", "--mode", "cluster", "--set", WITH_KEY, "--dry-run", dry_run_only=True)[1]))
    assert [st["Name"] for st in calls["emr.run_job_flow"]["Steps"]] == ["bronze", "silver", "gold", "catalog"]
    assert calls["emr.run_job_flow"]["SecurityConfiguration"] == calls["emr.create_security_configuration"]["Name"]


def test_dry_run_serverless_plan_has_one_job_per_stage(cli):
    calls = _calls(cli("run", "--mode", "serverless", "--dry-run", dry_run_only=True)[1])
    names = [name for name, _ in calls]
    assert names.index("emr-serverless.create_application") < names.index("emr-serverless.start_job_run")
    jobs = [params for name, params in calls if name == "emr-serverless.start_job_run"]
    assert [j["jobDriver"]["sparkSubmit"]["entryPointArguments"][0] for j in jobs] == ["bronze", "silver", "gold", "catalog"]
    assert all(j["applicationId"] == "<emr-serverless.create_application:applicationId>" for j in jobs)


def test_one_application_runs_the_chain_as_one_job_or_one_step(cli):
    """aws.one_application: one job run (and one cluster step) runs pipelines.run over aws.stages."""
    chain = "--set", "aws.one_application=true"
    calls = _calls(cli("run", "--mode", "serverless", *chain, "--dry-run", dry_run_only=True)[1])
    (job,) = [params for name, params in calls if name == "emr-serverless.start_job_run"]
    assert job["name"].endswith("-chain")
    arguments = job["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert arguments[:4] == ["run", "--jobs", "bronze,silver,gold,catalog", "--no-report"]
    assert arguments[4:6] == ["--conf", "conf/aws.yaml"]
    calls = dict(_calls(cli("run", "--mode", "cluster", *chain, "--set", WITH_KEY, "--dry-run", dry_run_only=True)[1]))
    (step,) = calls["emr.run_job_flow"]["Steps"]
    args = step["HadoopJarStep"]["Args"]
    assert step["Name"] == "chain" and args[args.index("run") :][:4] == ["run", "--jobs", "bronze,silver,gold,catalog", "--no-report"]


def test_studio_adds_what_an_emr_studio_workspace_attaches_through(cli):
    """aws.studio: the cluster installs Livy and JupyterEnterpriseGateway (Studio's kernels run through
    them; emr-spark-8.0.0 has no JupyterHub) and the Serverless application allows Studio sessions."""
    default = dict(_calls(cli("run", "--mode", "cluster", "--set", WITH_KEY, "--dry-run", dry_run_only=True)[1]))
    assert default["emr.run_job_flow"]["Applications"] == [{"Name": "Spark"}]
    studio = ("--set", "aws.studio=true", "--set", "aws.cluster.keep_alive=true")
    calls = dict(_calls(cli("run", "--mode", "cluster", "--set", WITH_KEY, *studio, "--dry-run", dry_run_only=True)[1]))
    assert [a["Name"] for a in calls["emr.run_job_flow"]["Applications"]] == ["Spark", "Livy", "JupyterEnterpriseGateway"]
    assert calls["emr.run_job_flow"]["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    plain = dict(_calls(cli("run", "--mode", "serverless", "--dry-run", dry_run_only=True)[1]))
    assert "interactiveConfiguration" not in plain["emr-serverless.create_application"]
    calls = dict(_calls(cli("run", "--mode", "serverless", "--set", "aws.studio=true", "--dry-run", dry_run_only=True)[1]))
    assert calls["emr-serverless.create_application"]["interactiveConfiguration"] == {"studioEnabled": True}
