"""run, status, logs and teardown against moto: step order and arguments, Serverless job arguments."""

from __future__ import annotations

import gzip
import json
import shlex
from datetime import datetime, timedelta

import boto3
import pytest

from deploy import cluster, serverless
from deploy.executor import DeployError, Executor
from tests.deploy.conftest import BUCKET, KMS_KEY, REGION, WITH_KEY

STAGES = ["bronze", "silver", "gold", "catalog"]
# Inputs of the run tests, fixed here so that what they assert follows from the test and not from
# copies of conf/aws.yaml's current values.
FIXED = (
    f"aws.stages=[{', '.join(STAGES)}]", "aws.cluster.name=test-etl", "aws.serverless.name=test-etl",
    "aws.cluster.release_label=emr-7.9.0", "aws.cluster.master.instance_type=m5.2xlarge",
    "aws.cluster.core.instance_type=m6g.xlarge", "aws.cluster.core.count=3", "aws.cluster.task.count=0",
    "aws.serverless.auto_stop_idle_minutes=7", "aws.serverless.max_executors=3", WITH_KEY,
)


def fixed(*more: str) -> list[str]:
    return [a for o in (*FIXED, *more) for a in ("--set", o)]
# moto 5.1.22 accepts only release labels shaped emr-X.Y.0; the default emr-spark-8.0.0 is checked
# in the plan tests below, without moto.
MOTO_SERVERLESS_RELEASE = "aws.serverless.release_label=emr-7.9.0"


@pytest.fixture
def roles(service_policy, settings):
    """Roles created, bucket bare (moto denies every object request once our bucket policy is set)."""
    from deploy.iam import provision_roles

    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    provision_roles(Executor(REGION, dry_run=False, out=open("/dev/null", "w")), settings(service_policy))


def emr():
    return boto3.client("emr", region_name=REGION)


def sls():
    return boto3.client("emr-serverless", region_name=REGION)


def _cluster_id() -> str:
    (summary,) = emr().list_clusters()["Clusters"]
    return summary["Id"]


# --- EMR on EC2 -------------------------------------------------------------------------------


def test_cluster_run_submits_the_cluster_from_conf(roles, cli, settings):
    status, out = cli("run", "--mode", "cluster", "--no-wait", *fixed())
    assert status == 0, out
    iam = settings().conf["aws.iam"]  # the roles the fixture created
    described = emr().describe_cluster(ClusterId=_cluster_id())["Cluster"]
    assert described["Name"] == "test-etl"
    assert described["ReleaseLabel"] == "emr-7.9.0"
    assert described["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert described["ServiceRole"] == iam["emr_service_role"]
    assert described["Ec2InstanceAttributes"]["IamInstanceProfile"] == iam["ec2_role"]
    assert [a["Name"] for a in described["Applications"]] == ["Spark"]
    # AmazonEMRServicePolicy_v2 launches instances only for a cluster carrying this tag.
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in described["Tags"]
    groups = {g["InstanceGroupType"]: g for g in emr().list_instance_groups(ClusterId=_cluster_id())["InstanceGroups"]}
    assert {k: (g["InstanceType"], g["RequestedInstanceCount"], g["Market"]) for k, g in groups.items()} == {
        "MASTER": ("m5.2xlarge", 1, "ON_DEMAND"),
        "CORE": ("m6g.xlarge", 3, "ON_DEMAND"),
    }


def test_cluster_steps_in_order_with_their_arguments(roles, cli):
    assert cli("run", "--mode", "cluster", "--no-wait", *fixed())[0] == 0
    steps = list(reversed(emr().list_steps(ClusterId=_cluster_id())["Steps"]))  # API: newest first
    assert [st["Name"] for st in steps] == STAGES
    for stage, st in zip(STAGES, steps):
        described = emr().describe_step(ClusterId=_cluster_id(), StepId=st["Id"])["Step"]
        assert described["ActionOnFailure"] == "TERMINATE_CLUSTER"
        assert described["Config"]["Jar"] == "command-runner.jar"
        args = described["Config"]["Args"]
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        # the stage gets exactly the conf deploy loaded: conf/aws.yaml, then every --set given to deploy
        forwarded = [a for o in FIXED for a in ("--set", o)]
        assert args[args.index(f"s3://{BUCKET}/code/entry.py") + 1 :] == [stage, "--conf", "conf/aws.yaml", *forwarded]
        assert args[args.index("--py-files") + 1] == f"s3://{BUCKET}/code/fruits-code.zip"
        confs = {args[i + 1].split("=", 1)[0]: args[i + 1].split("=", 1)[1] for i, a in enumerate(args) if a == "--conf" and "=" in args[i + 1]}
        assert confs["spark.archives"] == f"s3://{BUCKET}/code/env/fruits-env.tar.gz#environment"
        assert confs["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
        assert confs["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
        assert confs["spark.yarn.appMasterEnv.FRUITS_BUCKET"] == BUCKET  # forwarded, so conf/aws.yaml resolves


def test_cluster_plan_options(settings):
    s = settings(
        "aws.cluster.task.count=3", "aws.cluster.keep_alive=true", "aws.cluster.subnet_id=subnet-123",
        "aws.cluster.idle_timeout_minutes=20", WITH_KEY,
    )  # fmt: skip
    request = cluster.run_job_flow_request(s)
    task = request["Instances"]["InstanceGroups"][-1]
    assert (task["InstanceRole"], task["Market"], task["InstanceCount"]) == ("TASK", "SPOT", 3)
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["Instances"]["Ec2SubnetId"] == "subnet-123"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1200}
    assert {st["ActionOnFailure"] for st in request["Steps"]} == {"CANCEL_AND_WAIT"}
    assert request["Configurations"] == [{"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}}]


class FakeEmr:
    """list_steps answers from a script of states, one set per poll."""

    def __init__(self, polls: list[list[str]]):
        self.polls = polls
        self.calls = 0

    def get_paginator(self, operation):
        fake = self

        class Pages:
            def paginate(self, **params):
                states = fake.polls[min(fake.calls, len(fake.polls) - 1)]
                fake.calls += 1
                start = datetime(2026, 1, 1)
                steps = [
                    {"Name": stage, "Status": {"State": state, "Timeline": {"StartDateTime": start, "EndDateTime": start + timedelta(minutes=3)}}}
                    for stage, state in zip(STAGES, states)
                ]
                return [{"Steps": list(reversed(steps))}]

        return Pages()

    def describe_cluster(self, ClusterId):
        return {"Cluster": {"Status": {"State": "RUNNING"}}}


def test_wait_for_steps_polls_until_every_step_ended(settings, capsys):
    fake = FakeEmr([
        ["RUNNING", "PENDING", "PENDING", "PENDING"], ["COMPLETED", "RUNNING", "PENDING", "PENDING"], ["COMPLETED"] * 4,
    ])
    ex = Executor(REGION, dry_run=False, client_factory=lambda service, region: fake)
    slept = []
    steps = cluster.wait_for_steps(ex, settings(), "j-1", sleep=slept.append)
    assert [st["Name"] for st in steps] == STAGES
    assert fake.calls == 3 and slept == [30, 30]
    lines, ok = cluster.step_report(steps)
    assert ok and "3.0 min" in lines[0]


def test_failed_step_is_reported(settings):
    fake = FakeEmr([["COMPLETED", "FAILED", "CANCELLED"]])
    ex = Executor(REGION, dry_run=False, client_factory=lambda service, region: fake)
    lines, ok = cluster.step_report(cluster.wait_for_steps(ex, settings(), "j-1", sleep=lambda s: None))
    assert not ok and "FAILED" in lines[1]


# --- EMR Serverless -----------------------------------------------------------------------------


def test_serverless_run_creates_the_application_and_runs_each_stage(roles, cli, settings):
    status, out = cli("run", "--mode", "serverless", *fixed(MOTO_SERVERLESS_RELEASE, "aws.poll_seconds=0"))
    assert status == 0, out
    assert "all stages succeeded" in out
    (app,) = sls().list_applications()["applications"]
    described = sls().get_application(applicationId=app["id"])["application"]
    assert described["name"] == "test-etl" and described["type"].upper() == "SPARK"
    assert described["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 7}
    runs = sls().list_job_runs(applicationId=app["id"])["jobRuns"]
    by_name = {r["name"]: sls().get_job_run(applicationId=app["id"], jobRunId=r["id"])["jobRun"] for r in runs}
    assert set(by_name) == {f"test-etl-{stage}" for stage in STAGES}
    job_role = settings().conf["aws.iam.serverless_job_role"]  # the role the fixture created
    for stage in STAGES:
        job = by_name[f"test-etl-{stage}"]
        assert job["executionRole"].endswith(f":role/{job_role}")
        driver = job["jobDriver"]["sparkSubmit"]
        assert driver["entryPoint"] == f"s3://{BUCKET}/code/entry.py"
        assert driver["entryPointArguments"] == [stage, "--conf", "conf/aws.yaml", *fixed(MOTO_SERVERLESS_RELEASE, "aws.poll_seconds=0")]
        params = shlex.split(driver["sparkSubmitParameters"])
        assert params[params.index("--py-files") + 1] == f"s3://{BUCKET}/code/fruits-code.zip"
        confs = dict(params[i + 1].split("=", 1) for i, p in enumerate(params) if p == "--conf")
        assert confs["spark.archives"] == f"s3://{BUCKET}/code/env/fruits-env.tar.gz#environment"
        assert confs["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
        assert confs["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
        assert confs["spark.jars"] == "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar"
        assert confs["spark.dynamicAllocation.maxExecutors"] == "3"
        assert job["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == (
            f"s3://{BUCKET}/logs/serverless/"
        )
    assert out.index("bronze: job run") < out.index("silver: job run") < out.index("gold: job run")


def test_serverless_reuses_the_application(roles, cli):
    args = ("run", "--mode", "serverless", "--set", MOTO_SERVERLESS_RELEASE, "--set", "aws.poll_seconds=0")
    assert cli(*args)[0] == 0
    status, out = cli(*args)
    assert status == 0 and "reused" in out
    assert len(sls().list_applications()["applications"]) == 1


SERVERLESS_SHAPE = (
    "aws.serverless.release_label=emr-spark-9.9.0", "aws.serverless.architecture=ARM64",
    "aws.serverless.driver={cpu: 2, memory_gb: 8, disk_gb: 20}",
    "aws.serverless.executor={cpu: 4, memory_gb: 16, disk_gb: 20}", "aws.serverless.max_executors=2",
)


def test_serverless_plan_from_conf(settings):
    s = settings(*SERVERLESS_SHAPE, "aws.serverless.initial_capacity.executors=2")
    request = serverless.application_request(s)
    assert request["releaseLabel"] == "emr-spark-9.9.0" and request["architecture"] == "ARM64"
    assert request["maximumCapacity"] == {"cpu": "10 vCPU", "memory": "40 GB", "disk": "60 GB"}
    assert request["initialCapacity"] == {  # no DRIVER entry: the API's minimum workerCount is 1
        "EXECUTOR": {"workerCount": 2, "workerConfiguration": {"cpu": "4 vCPU", "memory": "16 GB", "disk": "20 GB"}},
    }
    confs = dict(serverless.spark_settings(s))
    assert (confs["spark.executor.memory"], confs["spark.driver.memory"]) == ("14g", "7g")  # + overhead fits the worker
    assert "initialCapacity" not in serverless.application_request(settings(*SERVERLESS_SHAPE))


def test_spark_submit_parameters_are_plain_space_separated_pairs(settings):
    """As AWS documents sparkSubmitParameters: `--conf key=value` separated by spaces, no shell quoting."""
    s = settings()
    params = serverless.job_run_request(s, "app-1", "arn:aws:iam::123456789012:role/r", "silver")["jobDriver"]["sparkSubmit"][
        "sparkSubmitParameters"
    ]
    assert "'" not in params and '"' not in params
    words = params.split(" ")
    assert words[:2] == ["--py-files", f"s3://{BUCKET}/code/fruits-code.zip"]
    assert words[2::2] == ["--conf"] * len(serverless.spark_settings(s))
    assert f"spark.archives=s3://{BUCKET}/code/env/fruits-env.tar.gz#environment" in words


def test_a_spark_value_with_a_space_is_refused_in_one_line(settings):
    s = settings("aws.delta_jars=[/usr/share/aws/delta lib/delta-spark.jar]")
    with pytest.raises(DeployError, match=r"^Spark setting --conf 'spark.jars=/usr/share/aws/delta lib/delta-spark.jar' .* space") as caught:
        serverless.spark_submit_parameters(s)
    assert "\n" not in str(caught.value)


class FakeServerless:
    def __init__(self, states: dict[str, str]):
        self.states = states
        self.started: list[str] = []

    def get_role(self, RoleName):
        return {"Role": {"Arn": f"arn:aws:iam::123456789012:role/{RoleName}"}}

    def get_paginator(self, operation):
        class Pages:
            def paginate(self, **params):
                return [{"applications": [{"id": "app-1", "name": "fruits-etl"}]}]

        return Pages()

    def start_job_run(self, **request):
        stage = request["jobDriver"]["sparkSubmit"]["entryPointArguments"][0]
        self.started.append(stage)
        return {"jobRunId": f"run-{stage}"}

    def get_application(self, applicationId):
        return {"application": {"applicationId": applicationId, "state": "STARTED"}}

    def get_job_run(self, applicationId, jobRunId):
        stage = jobRunId.removeprefix("run-")
        return {"jobRun": {"jobRunId": jobRunId, "state": self.states[stage], "stateDetails": "boom"}}


class NewApplication(FakeServerless):
    """No application yet: create_application answers CREATING, then get_application `states` in turn."""

    def __init__(self, states: list[str]):
        super().__init__({"bronze": "SUCCESS", "silver": "SUCCESS", "gold": "SUCCESS", "catalog": "SUCCESS"})
        self.app_states, self.log = states, []

    def get_paginator(self, operation):
        class Pages:
            def paginate(self, **params):
                return [{"applications": []}]

        return Pages()

    def create_application(self, **request):
        self.log.append("create_application")
        return {"applicationId": "app-new"}

    def get_application(self, applicationId):
        self.log.append("get_application")
        state = self.app_states[min(self.log.count("get_application"), len(self.app_states)) - 1]
        return {"application": {"applicationId": applicationId, "state": state}}

    def start_job_run(self, **request):
        self.log.append("start_job_run")
        return super().start_job_run(**request)


def test_jobs_start_only_once_the_new_application_is_created(settings):
    fake = NewApplication(["CREATING", "CREATING", "CREATED"])
    ex = Executor(REGION, dry_run=False, out=open("/dev/null", "w"), client_factory=lambda service, region: fake)
    assert serverless.run(ex, settings("aws.poll_seconds=0")) is True
    assert fake.log[:5] == ["create_application", "get_application", "get_application", "get_application", "start_job_run"]


def test_waiting_for_the_application_polls_at_the_conf_interval_and_gives_up_at_the_timeout(settings):
    fake = NewApplication(["CREATING"])
    ex = Executor(REGION, dry_run=False, out=open("/dev/null", "w"), client_factory=lambda service, region: fake)
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(DeployError, match="application app-new still CREATING after aws.wait_timeout_minutes=1;"):
        serverless.ensure_application(ex, settings("aws.wait_timeout_minutes=1"), sleep=sleep, clock=lambda: now[0])
    assert slept == [30, 30, 30]  # polled at 0, 30, 60 and 90 s; past the 60 s deadline at 90
    assert "start_job_run" not in fake.log


def test_serverless_chain_stops_at_the_first_failed_stage(settings):
    fake = FakeServerless({"bronze": "SUCCESS", "silver": "FAILED", "gold": "SUCCESS"})
    ex = Executor(REGION, dry_run=False, out=open("/dev/null", "w"), client_factory=lambda service, region: fake)
    assert serverless.run(ex, settings("aws.poll_seconds=0")) is False
    assert fake.started == ["bronze", "silver"]


# --- status, logs, teardown ---------------------------------------------------------------------


def test_status_lists_cluster_and_application(roles, cli):
    assert cli("run", "--mode", "cluster", "--no-wait", "--set", WITH_KEY)[0] == 0
    assert cli("run", "--mode", "serverless", "--set", MOTO_SERVERLESS_RELEASE, "--set", "aws.poll_seconds=0")[0] == 0
    status, out = cli("status")
    assert status == 0, out
    assert f"cluster {_cluster_id()} (fruits-etl)" in out
    assert "application" in out and "fruits-etl-gold" in out


def test_logs_print_the_driver_output(roles, cli):
    args = ("--set", MOTO_SERVERLESS_RELEASE, "--set", "aws.poll_seconds=0")
    assert cli("run", "--mode", "serverless", *args)[0] == 0
    (app,) = sls().list_applications()["applications"]
    bronze = next(r for r in sls().list_job_runs(applicationId=app["id"])["jobRuns"] if r["name"].endswith("bronze"))
    key = f"logs/serverless/applications/{app['id']}/jobs/{bronze['id']}/SPARK_DRIVER/stdout.gz"
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"line 1\nbronze: 6270 new rows\n"))
    status, out = cli("logs", "--mode", "serverless", *args)
    assert status == 0, out
    assert "bronze: 6270 new rows" in out
    assert "stderr.gz: not there" in out


def test_teardown_terminates_cluster_and_deletes_application_keeps_bucket(roles, cli):
    assert cli("run", "--mode", "cluster", "--no-wait", "--set", WITH_KEY)[0] == 0
    assert cli("run", "--mode", "serverless", "--set", MOTO_SERVERLESS_RELEASE, "--set", "aws.poll_seconds=0")[0] == 0
    status, out = cli("teardown", "--set", "aws.poll_seconds=0")
    assert status == 0, out
    assert emr().describe_cluster(ClusterId=_cluster_id())["Cluster"]["Status"]["State"] == "TERMINATED"
    assert [a["state"] for a in sls().list_applications()["applications"]] == ["TERMINATED"]
    assert boto3.client("s3", region_name=REGION).head_bucket(Bucket=BUCKET)


def test_teardown_deletes_bucket_and_roles_only_when_asked(roles, cli, service_policy):
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key="lake/bronze/part-0.parquet", Body=b"x")
    assert cli("teardown", "--delete-bucket", "--delete-roles", "--set", "aws.poll_seconds=0", "--set", service_policy)[0] == 0
    assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not boto3.client("iam", region_name=REGION).list_roles()["Roles"]
    assert not boto3.client("iam", region_name=REGION).list_instance_profiles()["InstanceProfiles"]


# --- EMR security configuration ---------------------------------------------------------------


def test_security_configuration_encrypts_disks_with_the_customer_key(settings):
    config = cluster.security_configuration(settings(WITH_KEY))["EncryptionConfiguration"]
    assert config["EnableAtRestEncryption"] is True
    assert config["AtRestEncryptionConfiguration"]["LocalDiskEncryptionConfiguration"] == {
        "EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": KMS_KEY, "EnableEbsEncryption": True,
    }  # fmt: skip
    assert config["EnableInTransitEncryption"] is False and "InTransitEncryptionConfiguration" not in config
    zip_uri = f"s3://{BUCKET}/code/certs/emr-tls.zip"
    with_tls = cluster.security_configuration(settings(WITH_KEY, f"aws.cluster.security.tls_certificates_zip={zip_uri}"))
    assert with_tls["EncryptionConfiguration"]["EnableInTransitEncryption"] is True
    assert with_tls["EncryptionConfiguration"]["InTransitEncryptionConfiguration"] == {
        "TLSCertificateConfiguration": {"CertificateProviderType": "PEM", "S3Object": zip_uri}
    }
    assert cluster.security_configuration_name(settings(WITH_KEY)) != cluster.security_configuration_name(
        settings(WITH_KEY, f"aws.cluster.security.tls_certificates_zip={zip_uri}")
    )


def test_cluster_without_a_customer_key_is_refused_in_one_line(cli, capsys):
    status, out = cli("run", "--mode", "cluster", "--dry-run", dry_run_only=True)
    assert status == 2 and "emr.run_job_flow" not in out
    (line,) = capsys.readouterr().err.splitlines()
    assert "set s3.encryption_key to a KMS key ARN" in line


def test_provision_creates_the_security_configuration_once_and_the_cluster_names_it(service_policy, cli, settings):
    for _ in range(2):  # moto refuses a second create of the same name: provision must not try
        status, out = cli("provision", "--set", service_policy, "--set", WITH_KEY)
        assert status == 0, out
    name = cluster.security_configuration_name(settings(WITH_KEY))
    stored = json.loads(emr().describe_security_configuration(Name=name)["SecurityConfiguration"])
    assert stored == cluster.security_configuration(settings(WITH_KEY))
    assert cli("run", "--mode", "cluster", "--no-wait", "--set", WITH_KEY)[0] == 0
    assert emr().describe_cluster(ClusterId=_cluster_id())["Cluster"]["SecurityConfiguration"] == name
