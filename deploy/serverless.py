"""EMR Serverless: one application, one job run per stage, in order, each waited for.

The application auto-starts on the first job and auto-stops when idle, so nothing is billed between
runs (pre-initialised capacity, when configured, is billed while the application is started). A
stage starts only when the previous one succeeded: silver never reads a half-written bronze.
"""

from __future__ import annotations

import time
from typing import Callable

from deploy.executor import DeployError, Executor, Pending
from deploy.logs import print_tail
from deploy.package import code_uris
from deploy.settings import Settings
from deploy.spark_args import ENV_PYTHON, environment_conf, forwarded_env, jobs, stage_arguments

JOB_END_STATES = {"SUCCESS", "FAILED", "CANCELLED"}
# States in which an application takes job runs (auto-start starts a stopped one); not CREATING.
APPLICATION_READY_STATES = {"CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"}
# Spark asks each container for its memory plus ~10 % overhead; the sum must fit the worker.
MEMORY_OVERHEAD = 1.1


def worker_configuration(worker: dict) -> dict:
    return {"cpu": f"{worker['cpu']} vCPU", "memory": f"{worker['memory_gb']} GB", "disk": f"{worker['disk_gb']} GB"}


def application_request(s: Settings) -> dict:
    app = s.conf["aws.serverless"]
    driver, executor, count = app["driver"], app["executor"], app["max_executors"]
    request: dict = {
        "name": app["name"],
        "releaseLabel": app["release_label"],
        "type": "SPARK",
        "architecture": app["architecture"],
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": app["auto_stop_idle_minutes"]},
        # Room for one job at a time: its driver and all its executors.
        "maximumCapacity": {
            "cpu": f"{driver['cpu'] + count * executor['cpu']} vCPU",
            "memory": f"{driver['memory_gb'] + count * executor['memory_gb']} GB",
            "disk": f"{driver['disk_gb'] + count * executor['disk_gb']} GB",
        },
        "tags": {"project": "fruits"},
    }
    # The API refuses a worker type with a count of 0 (minimum 1): send only the warm ones.
    warm = app["initial_capacity"]
    initial = {
        kind: {"workerCount": warm[key], "workerConfiguration": worker_configuration(worker)}
        for kind, key, worker in (("DRIVER", "drivers", driver), ("EXECUTOR", "executors", executor))
        if warm[key] > 0
    }
    if initial:
        request["initialCapacity"] = initial
    if s.conf["aws.studio"]:
        # EMR Studio Workspaces may attach to the application for interactive sessions (docs/deploy.md).
        request["interactiveConfiguration"] = {"studioEnabled": True}
    return request


def spark_settings(s: Settings) -> list[tuple[str, str]]:
    app = s.conf["aws.serverless"]
    driver, executor = app["driver"], app["executor"]
    return [
        *environment_conf(s),
        ("spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON", ENV_PYTHON),
        ("spark.emr-serverless.driverEnv.PYSPARK_PYTHON", ENV_PYTHON),
        ("spark.executorEnv.PYSPARK_PYTHON", ENV_PYTHON),
        *[(f"spark.emr-serverless.driverEnv.{name}", value) for name, value in forwarded_env(s).items()],
        ("spark.jars", ",".join(s.conf["aws.delta_jars"])),
        ("spark.driver.cores", str(driver["cpu"])),
        ("spark.driver.memory", _spark_memory(driver)),
        ("spark.emr-serverless.driver.disk", f"{driver['disk_gb']}G"),
        ("spark.executor.cores", str(executor["cpu"])),
        ("spark.executor.memory", _spark_memory(executor)),
        ("spark.emr-serverless.executor.disk", f"{executor['disk_gb']}G"),
        ("spark.dynamicAllocation.maxExecutors", str(app["max_executors"])),
    ]


def _spark_memory(worker: dict) -> str:
    return f"{int(worker['memory_gb'] / MEMORY_OVERHEAD)}g"


def spark_submit_parameters(s: Settings) -> str:
    """`--py-files URI --conf key=value ...` joined by single spaces, as AWS documents the field.

    EMR Serverless splits the string on spaces and passes no shell over it, so quotes would reach
    Spark as part of a value; a value holding a space (or a quote) cannot be passed and is refused.
    """
    pairs = [("--py-files", code_uris(s)["code_archive"]), *(("--conf", f"{k}={v}") for k, v in spark_settings(s))]
    for option, value in pairs:
        if not value or any(c.isspace() or c in "'\"" for c in value):
            raise DeployError(
                f"Spark setting {option} {value!r} is empty or holds a space or a quote, which EMR Serverless's "
                f"sparkSubmitParameters cannot carry; fix the conf value it comes from (aws.*, s3.*, or the "
                f"variable in aws.forward_env)"
            )
    return " ".join(part for pair in pairs for part in pair)


def job_run_request(s: Settings, application_id: str, role_arn: str, stage: str) -> dict:
    return {
        "applicationId": application_id,
        "executionRoleArn": role_arn,
        "name": f"{s.conf['aws.serverless.name']}-{stage}",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": code_uris(s)["entry"],
                "entryPointArguments": stage_arguments(s, stage),
                "sparkSubmitParameters": spark_submit_parameters(s),
            }
        },
        "configurationOverrides": {"monitoringConfiguration": {"s3MonitoringConfiguration": _log_config(s)}},
        "executionTimeoutMinutes": s.conf["aws.serverless.execution_timeout_minutes"],
    }


def _log_config(s: Settings) -> dict:
    config = {"logUri": s.uri(f"{s.logs_prefix}/serverless/")}
    if s.kms_key:
        config["encryptionKeyArn"] = s.kms_key
    return config


def find_application(ex: Executor, s: Settings) -> str | None:
    """Id of the live application named aws.serverless.name; in a dry run, None (one would be created)."""
    states = ["CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
    apps = ex.pages("emr-serverless", "list_applications", "applications", states=states)
    for app in apps:
        if app["name"] == s.conf["aws.serverless.name"]:
            return app["id"]
    return None


def ensure_application(
    ex: Executor,
    s: Settings,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The application's id once it accepts jobs: reused or created, then waited out of CREATING."""
    app_id = find_application(ex, s)
    if app_id:
        ex.say(f"application {app_id} ({s.conf['aws.serverless.name']}) reused")
    else:
        app_id = ex.call("emr-serverless", "create_application", **application_request(s))["applicationId"]
    wait_for_application(ex, s, app_id, APPLICATION_READY_STATES, sleep, clock)
    return app_id


def wait_for_application(
    ex: Executor,
    s: Settings,
    app_id: str,
    states: set[str],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll get_application every aws.poll_seconds until its state is one of `states`; returns it."""
    poll = s.conf["aws.poll_seconds"]
    if ex.dry_run:
        ex.say(f"[dry-run] then poll emr-serverless.get_application every {poll} s until {' or '.join(sorted(states))}")
        return next(iter(states))
    deadline = clock() + s.conf["aws.wait_timeout_minutes"] * 60
    while True:
        state = ex.call("emr-serverless", "get_application", applicationId=app_id)["application"]["state"]
        if state in states:
            return state
        if state == "TERMINATED":
            raise DeployError(f"application {app_id} is TERMINATED; run again to create a new one")
        if clock() > deadline:
            raise DeployError(
                f"application {app_id} still {state} after aws.wait_timeout_minutes="
                f"{s.conf['aws.wait_timeout_minutes']}; check it with `python -m deploy status`"
            )
        sleep(poll)


def wait_for_job(
    ex: Executor,
    s: Settings,
    application_id: str,
    job_run_id: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    deadline = clock() + s.conf["aws.wait_timeout_minutes"] * 60
    while True:
        job = ex.call("emr-serverless", "get_job_run", applicationId=application_id, jobRunId=job_run_id)["jobRun"]
        if job["state"] in JOB_END_STATES:
            return job
        if clock() > deadline:
            raise DeployError(
                f"job run {job_run_id} still {job['state']} after aws.wait_timeout_minutes="
                f"{s.conf['aws.wait_timeout_minutes']}; it goes on: follow it with `python -m deploy status`"
            )
        sleep(s.conf["aws.poll_seconds"])


def job_line(stage: str, job: dict) -> str:
    billed = job.get("billedResourceUtilization") or {}
    usage = (
        f"{billed.get('vCPUHour', 0):.2f} vCPU-h, {billed.get('memoryGBHour', 0):.2f} GB-h"
        if billed
        else "usage not reported"
    )
    seconds = job.get("totalExecutionDurationSeconds", 0)
    detail = f"  {job['stateDetails']}" if job.get("stateDetails") and job["state"] != "SUCCESS" else ""
    return f"  {stage:<10} {job['jobRunId']:<22} {job['state']:<9} {seconds / 60:6.1f} min  {usage}{detail}"


def run(ex: Executor, s: Settings, wait: bool = True) -> bool:
    """Start each job (a stage, or the chain: spark_args.jobs) after the previous one succeeded;
    without wait, only the first is started."""
    role_arn = ex.call("iam", "get_role", RoleName=s.conf["aws.iam.serverless_job_role"])["Role"]["Arn"]
    app_id = ensure_application(ex, s)
    stages = jobs(s)
    finished: list[tuple[str, dict]] = []
    for stage in stages:
        job_run_id = ex.call("emr-serverless", "start_job_run", **job_run_request(s, app_id, role_arn, stage))["jobRunId"]
        if ex.dry_run:
            ex.say(f"[dry-run] then poll emr-serverless.get_job_run every {s.conf['aws.poll_seconds']} s until {stage} ends")
            continue
        ex.say(f"{stage}: job run {job_run_id} started on application {app_id}")
        if not wait:
            ex.say("not waiting (--no-wait): later stages must be started after this one succeeds")
            return True
        job = wait_for_job(ex, s, app_id, job_run_id)
        finished.append((stage, job))
        if job["state"] != "SUCCESS":
            break
    if ex.dry_run:
        return True
    ok = len(finished) == len(stages) and all(job["state"] == "SUCCESS" for _, job in finished)
    ex.say(f"application {app_id}: {'all stages succeeded' if ok else 'FAILED'}")
    for stage, job in finished:
        ex.say(job_line(stage, job))
    if not ok:
        ex.say("logs: python -m deploy logs --mode serverless")
    return ok


def recent_jobs(ex: Executor, app_id: str, count: int) -> list[dict]:
    jobs = ex.call("emr-serverless", "list_job_runs", applicationId=app_id, maxResults=count)
    return [] if ex.dry_run else jobs["jobRuns"]


def status(ex: Executor, s: Settings) -> None:
    app_id = find_application(ex, s) or (Pending("application id") if ex.dry_run else None)
    if app_id is None:
        ex.say(f"no application named {s.conf['aws.serverless.name']}")
        return
    app = ex.call("emr-serverless", "get_application", applicationId=app_id)["application"]
    ex.say(f"application {app_id} ({s.conf['aws.serverless.name']}): {app['state']}")
    for job in recent_jobs(ex, app_id, len(jobs(s))):
        ex.say(f"  {job['name']:<22} {job['id']:<22} {job['state']}")


def logs(ex: Executor, s: Settings, lines: int) -> None:
    """Tails of the driver's stdout (the stage's summary line) and stderr for the latest job runs."""
    app_id = find_application(ex, s) or (Pending("application id") if ex.dry_run else None)
    if app_id is None:
        raise DeployError(f"no application named {s.conf['aws.serverless.name']}")
    runs = recent_jobs(ex, app_id, len(jobs(s)))
    if ex.dry_run:
        runs = [{"id": Pending(f"job run id of {job}"), "name": job} for job in jobs(s)]
    for job in reversed(runs):  # the API lists the newest first
        ex.say(f"=== {job['name']} ({job['id']})")
        for name in ("stdout.gz", "stderr.gz"):
            key = f"{s.logs_prefix}/serverless/applications/{app_id}/jobs/{job['id']}/SPARK_DRIVER/{name}"
            print_tail(ex, s, key, lines)


def teardown(ex: Executor, s: Settings) -> None:
    """Stop the application (releasing any pre-initialised capacity) and delete it."""
    app_id = find_application(ex, s) or (Pending("application id") if ex.dry_run else None)
    if app_id is None:
        ex.say(f"no application named {s.conf['aws.serverless.name']}")
        return
    ex.call("emr-serverless", "stop_application", applicationId=app_id)
    wait_for_application(ex, s, app_id, {"STOPPED", "CREATED"})
    ex.call("emr-serverless", "delete_application", applicationId=app_id)
    ex.say(f"application {app_id} deleted")
