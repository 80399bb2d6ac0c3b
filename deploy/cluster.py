"""EMR on EC2: a transient cluster that runs bronze -> silver -> gold as spark-submit steps.

The steps go in the RunJobFlow request itself, so the cluster starts working as soon as it is up
and, unless aws.cluster.keep_alive, terminates after the last step (a failed step ends it too).
Idle auto-termination is the safety net for a cluster kept alive and forgotten.

Steps run in YARN cluster mode: the driver runs in a YARN container, where Spark unpacks the
environment archive, so driver and executors use the same shipped Python.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable

from deploy.executor import DeployError, Executor, Pending
from deploy.logs import print_tail
from deploy.package import code_uris
from deploy.settings import Settings
from deploy.spark_args import ENV_PYTHON, environment_conf, forwarded_env, jobs, stage_arguments

ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
STEP_END_STATES = {"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"}
CLUSTER_END_STATES = {"TERMINATED", "TERMINATED_WITH_ERRORS"}
MANAGED_POLICY_TAG = "for-use-with-amazon-emr-managed-policies"


def spark_submit_args(s: Settings, stage: str) -> list[str]:
    uris = code_uris(s)
    settings = [
        *environment_conf(s),
        ("spark.yarn.appMasterEnv.PYSPARK_PYTHON", ENV_PYTHON),
        ("spark.executorEnv.PYSPARK_PYTHON", ENV_PYTHON),
        *[(f"spark.yarn.appMasterEnv.{name}", value) for name, value in forwarded_env(s).items()],
    ]
    args = ["spark-submit", "--deploy-mode", "cluster"]
    for key, value in settings:
        args += ["--conf", f"{key}={value}"]
    return [*args, "--py-files", uris["code_archive"], uris["entry"], *stage_arguments(s, stage)]


def step(s: Settings, stage: str) -> dict:
    # A transient cluster has nothing left to do after a failure: terminate rather than idle.
    on_failure = "CANCEL_AND_WAIT" if s.conf["aws.cluster.keep_alive"] else "TERMINATE_CLUSTER"
    return {
        "Name": stage,
        "ActionOnFailure": on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": spark_submit_args(s, stage)},
    }


def instance_groups(s: Settings) -> list[dict]:
    cluster = s.conf["aws.cluster"]
    groups = [
        {
            "Name": "master",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",  # losing it loses the cluster
            "InstanceType": cluster["master"]["instance_type"],
            "InstanceCount": cluster["master"]["count"],
        }
    ]
    for role in ("core", "task"):
        group = cluster[role]
        if group["count"] > 0:
            groups.append(
                {
                    "Name": role,
                    "InstanceRole": role.upper(),
                    "Market": "SPOT" if group["spot"] else "ON_DEMAND",
                    "InstanceType": group["instance_type"],
                    "InstanceCount": group["count"],
                }
            )
    return groups


def security_configuration(s: Settings) -> dict:
    """Local disks and EBS encrypted with the customer KMS key; in-transit TLS when certificates are given."""
    if not s.kms_key:
        raise DeployError(
            "EMR on EC2 needs a customer KMS key to encrypt the nodes' local disks and EBS volumes (GDPR: encryption "
            "at rest): set s3.encryption_key to a KMS key ARN (with s3.encryption_algorithm SSE-KMS), or use --mode serverless"
        )
    certificates = s.conf["aws.cluster.security.tls_certificates_zip"]
    encryption: dict = {
        "EnableAtRestEncryption": True,
        "EnableInTransitEncryption": bool(certificates),
        "AtRestEncryptionConfiguration": {
            "LocalDiskEncryptionConfiguration": {
                "EncryptionKeyProviderType": "AwsKms",
                "AwsKmsKey": s.kms_key,
                "EnableEbsEncryption": True,
            },
        },
    }
    if certificates:
        encryption["InTransitEncryptionConfiguration"] = {
            "TLSCertificateConfiguration": {"CertificateProviderType": "PEM", "S3Object": certificates}
        }
    return {"EncryptionConfiguration": encryption}


def security_configuration_name(s: Settings) -> str:
    """The conf name plus a hash of the content: security configurations cannot be updated in place."""
    content = json.dumps(security_configuration(s), sort_keys=True).encode()
    return f"{s.conf['aws.cluster.security.name']}-{hashlib.sha256(content).hexdigest()[:10]}"


def ensure_security_configuration(ex: Executor, s: Settings) -> str:
    """Create the security configuration unless one of that name (hence that content) exists."""
    name = security_configuration_name(s)
    absent = ("InvalidRequestException", "ResourceNotFoundException")  # AWS's answer, moto's
    if ex.dry_run or ex.call("emr", "describe_security_configuration", tolerate=absent, Name=name) is None:
        ex.call("emr", "create_security_configuration", Name=name, SecurityConfiguration=json.dumps(security_configuration(s)))
    return name


# What an EMR Studio Workspace needs on a cluster to run its kernels (docs/deploy.md, "EMR Studio"):
# Jupyter Enterprise Gateway starts the kernels, Livy serves the PySpark kernel's session.
STUDIO_APPLICATIONS = ["Livy", "JupyterEnterpriseGateway"]


def applications(s: Settings) -> list[str]:
    """Spark, plus with `aws.studio` what an EMR Studio Workspace attaches through."""
    return ["Spark", *(STUDIO_APPLICATIONS if s.conf["aws.studio"] else [])]


def run_job_flow_request(s: Settings) -> dict:
    cluster = s.conf["aws.cluster"]
    instances: dict = {
        "InstanceGroups": instance_groups(s),
        "KeepJobFlowAliveWhenNoSteps": cluster["keep_alive"],
        "TerminationProtected": False,
    }
    if cluster["subnet_id"]:
        instances["Ec2SubnetId"] = cluster["subnet_id"]
    request = {
        "Name": cluster["name"],
        "ReleaseLabel": cluster["release_label"],
        "LogUri": s.uri(f"{s.logs_prefix}/emr/"),
        "Applications": [{"Name": name} for name in applications(s)],
        # Delta comes with the release; this classification puts it on Spark's class path.
        "Configurations": [{"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}}],
        "Instances": instances,
        "Steps": [step(s, job) for job in jobs(s)],
        "StepConcurrencyLevel": 1,
        "ServiceRole": s.conf["aws.iam.emr_service_role"],
        "JobFlowRole": s.conf["aws.iam.ec2_role"],
        "AutoTerminationPolicy": {"IdleTimeout": cluster["idle_timeout_minutes"] * 60},
        "SecurityConfiguration": security_configuration_name(s),
        # AmazonEMRServicePolicy_v2 (the service role's policy) only launches and manages EC2
        # resources tagged with this; EMR propagates the cluster's tags to its instances.
        "Tags": [{"Key": "project", "Value": "fruits"}, {"Key": MANAGED_POLICY_TAG, "Value": "true"}],
    }
    if s.kms_key:
        request["LogEncryptionKmsKeyId"] = s.kms_key
    return request


def start(ex: Executor, s: Settings) -> str:
    ensure_security_configuration(ex, s)  # made by provision; again here in case the conf changed since
    cluster_id = ex.call("emr", "run_job_flow", **run_job_flow_request(s))["JobFlowId"]
    ex.say(f"cluster {cluster_id} starting; steps: {' -> '.join(jobs(s))}")
    return cluster_id


def wait_for_steps(
    ex: Executor,
    s: Settings,
    cluster_id: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict]:
    """Poll until every step has ended (or the cluster has); returns the steps in run order."""
    poll = s.conf["aws.poll_seconds"]
    if ex.dry_run:
        ex.say(f"[dry-run] then poll emr.list_steps(ClusterId={cluster_id}) every {poll} s until every step ends")
        return []
    deadline = clock() + s.conf["aws.wait_timeout_minutes"] * 60
    while True:
        steps = list(reversed(ex.pages("emr", "list_steps", "Steps", ClusterId=cluster_id)))  # API: newest first
        state = ex.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        if all(st["Status"]["State"] in STEP_END_STATES for st in steps) or state in CLUSTER_END_STATES:
            return steps
        if clock() > deadline:
            raise DeployError(
                f"cluster {cluster_id} still running after aws.wait_timeout_minutes="
                f"{s.conf['aws.wait_timeout_minutes']}; it goes on: follow it with `python -m deploy status`"
            )
        sleep(poll)


def step_report(steps: list[dict]) -> tuple[list[str], bool]:
    """One line per step (name, state, minutes) and whether all completed."""
    lines = []
    for st in steps:
        timeline = st["Status"].get("Timeline", {})
        start, end = timeline.get("StartDateTime"), timeline.get("EndDateTime")
        minutes = f"{(end - start).total_seconds() / 60:.1f} min" if start and end else "-"
        reason = st["Status"].get("FailureDetails", {}).get("Reason", "")
        lines.append(f"  {st['Name']:<10} {st['Status']['State']:<11} {minutes:>10}  {reason}".rstrip())
    return lines, bool(steps) and all(st["Status"]["State"] == "COMPLETED" for st in steps)


def run(ex: Executor, s: Settings, wait: bool = True) -> bool:
    cluster_id = start(ex, s)
    if not wait:
        return True
    steps = wait_for_steps(ex, s, cluster_id)
    if ex.dry_run:
        return True
    lines, ok = step_report(steps)
    ex.say(f"cluster {cluster_id}: {'all steps completed' if ok else 'FAILED'}")
    for line in lines:
        ex.say(line)
    if not ok:
        ex.say(f"logs: python -m deploy logs --mode cluster --cluster-id {cluster_id}")
    return ok


def find_clusters(ex: Executor, s: Settings, states: list[str] | None = None) -> list[dict]:
    """Clusters named aws.cluster.name, newest first (a placeholder in a dry run)."""
    params = {"ClusterStates": states} if states else {}
    clusters = ex.pages("emr", "list_clusters", "Clusters", **params)
    if ex.dry_run:
        name = s.conf["aws.cluster.name"]
        return [{"Id": Pending(f"id of the cluster named {name}"), "Name": name, "Status": {"State": Pending("state")}}]
    return [c for c in clusters if c["Name"] == s.conf["aws.cluster.name"]]


def status(ex: Executor, s: Settings) -> None:
    clusters = find_clusters(ex, s)[:3]
    if not clusters:
        ex.say(f"no cluster named {s.conf['aws.cluster.name']}")
    for cluster in clusters:
        ex.say(f"cluster {cluster['Id']} ({cluster['Name']}): {cluster['Status']['State']}")
        steps = list(reversed(ex.pages("emr", "list_steps", "Steps", ClusterId=cluster["Id"])))
        for line in step_report(steps)[0]:
            ex.say(line)


def logs(ex: Executor, s: Settings, cluster_id: str | None, lines: int) -> None:
    """Tails of each step's stdout and stderr (spark-submit's output, with the YARN application id)."""
    if not cluster_id:
        clusters = find_clusters(ex, s)
        if not clusters:
            raise DeployError(f"no cluster named {s.conf['aws.cluster.name']}; pass --cluster-id")
        cluster_id = clusters[0]["Id"]
    steps = list(reversed(ex.pages("emr", "list_steps", "Steps", ClusterId=cluster_id)))
    if ex.dry_run:
        steps = [{"Id": Pending(f"step id of {stage}"), "Name": stage} for stage in jobs(s)]
    for st in steps:
        ex.say(f"=== step {st['Name']} ({st['Id']})")
        for name in ("stdout.gz", "stderr.gz"):
            print_tail(ex, s, f"{s.logs_prefix}/emr/{cluster_id}/steps/{st['Id']}/{name}", lines)
    ex.say(
        f"driver and executor logs: {s.uri(f'{s.logs_prefix}/emr/{cluster_id}/containers/')} "
        f"(YARN cluster mode: the driver is the application's first container)"
    )


def teardown(ex: Executor, s: Settings) -> None:
    ids = [c["Id"] for c in find_clusters(ex, s, ACTIVE_STATES)]
    if not ids:
        ex.say(f"no active cluster named {s.conf['aws.cluster.name']}")
        return
    ex.call("emr", "terminate_job_flows", JobFlowIds=ids)
    ex.say(f"terminating {', '.join(ids)}")
