"""`make rehearse`: the AWS run, as close as this machine allows (docs/deploy.md, "Dress rehearsal").

1. a MinIO server on 127.0.0.1 with its own KMS key; the bucket laid out by `deploy provision`'s
   own code (`deploy.storage.provision_bucket`), each request the server does not support named;
2. a user of that server whose policy is the S3 part of the job role's policy as `deploy/iam.py`
   builds it, plus the bucket policy's deny rules (MinIO applies a bucket policy to anonymous
   requests only, so they go into the user's policy, where it enforces them); every job runs with
   that user's keys only;
3. the Python environment archive built by `deploy/build_env.sh --host` (cached by the hash of its
   inputs) and `deploy package`'s own code uploading code, environment, weights and images;
4. a Spark standalone cluster: a master and two one-core workers, each its own JVM;
5. each job of `deploy run` (each stage of `aws.stages`, or with `aws.one_application` the one
   chain job) submitted with the arguments of the Serverless StartJobRun request (or, with
   --mode cluster, of the cluster's step) that `deploy run` builds;
6. the lake read back over S3 with the job user's keys and compared with a local run.
Every step prints its time; everything started is stopped, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from deploy import cluster, iam, package, serverless, storage
from deploy.executor import DeployError, Executor
from deploy.settings import Settings, load_settings
from deploy.spark_args import jobs
from pipelines import stages
from pipelines.config import PROJECT_ROOT, Conf, ConfError, load_conf, resolve_location
from pipelines.session import build_spark_session
from rehearsal import compare, environment, sample
from rehearsal.environment import EnvironmentBuildError
from rehearsal.s3_server import (
    BUCKET_ENV,
    ENDPOINT_ENV,
    LocalS3Server,
    S3ServerError,
    list_keys,
    new_bucket_name,
    patched_environ,
)
from rehearsal.spark_cluster import SPARK_HOME, ClusterError, StandaloneCluster, end_process_group
from rehearsal.submit import SubmitCommand, SubmitError, from_job_run, from_step, platform_conf

LOCAL_CONF = "conf/local.yaml"
AWS_CONFS = ("conf/aws.yaml", "conf/rehearse.yaml")
# Requests of `deploy provision` that MinIO does not implement (it answers MalformedXML or
# NotImplemented): reported, not rehearsed. Any other refusal fails the rehearsal.
NOT_SUPPORTED_HERE = {"put_public_access_block", "put_bucket_ownership_controls"}
# MinIO's lifecycle rules have no AbortIncompleteMultipartUpload: the others are applied without it.
UNSUPPORTED_LIFECYCLE_ACTION = "AbortIncompleteMultipartUpload"
# How MinIO answers a request it does not implement; any other refusal is an error.
NOT_IMPLEMENTED_CODES = {"NotImplemented", "MalformedXML", "InvalidArgument"}
# Stand-ins for what AWS would answer: the account (only Glue ARNs use it, and Glue is not
# rehearsed), the role and the application id in the request (not used by spark-submit).
ACCOUNT = "000000000000"
APPLICATION_ID = "rehearsal"
JOB_USER = "fruits-job"
# Bucket policy statements that cannot hold on a plain-HTTP loopback server.
TRANSPORT_CONDITION = "aws:SecureTransport"


class RehearsalError(RuntimeError):
    """A step failed; the message names it and where its log is."""


class LocalExecutor(Executor):
    """deploy's Executor against the local server: real calls, unsupported requests recorded."""

    def __init__(self, server: LocalS3Server, region: str, out):
        super().__init__(region, dry_run=False, out=out, client_factory=lambda service, _: server.client(service))
        self.not_supported: list[str] = []

    def call(self, service: str, operation: str, tolerate: tuple[str, ...] = (), **params):
        try:
            return super().call(service, operation, tolerate, **params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in NOT_IMPLEMENTED_CODES:
                raise
            rules = params.get("LifecycleConfiguration", {}).get("Rules", [])
            kept = [rule for rule in rules if UNSUPPORTED_LIFECYCLE_ACTION not in rule]
            if operation == "put_bucket_lifecycle_configuration" and len(kept) < len(rules):
                self.not_supported.append(f"{UNSUPPORTED_LIFECYCLE_ACTION} lifecycle rules ({len(rules) - len(kept)})")
                return super().call(service, operation, tolerate, **{**params, "LifecycleConfiguration": {"Rules": kept}})
            if operation not in NOT_SUPPORTED_HERE:
                raise
            self.not_supported.append(f"{service}.{operation}")
            return None


def job_user_policy(s: Settings) -> dict:
    """The job role's S3 statements (deploy/iam.py) plus the bucket policy's deny rules that apply here."""
    s3_statements = [st for st in iam.data_policy(s, ACCOUNT)["Statement"] if _is_s3(st)]
    denies = [
        {key: value for key, value in st.items() if key != "Principal"}
        for st in storage.bucket_policy(s)["Statement"]
        if TRANSPORT_CONDITION not in str(st.get("Condition", {}))
    ]
    return {"Version": "2012-10-17", "Statement": s3_statements + denies}


def _is_s3(statement: dict) -> bool:
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    return all(action.startswith("s3:") for action in actions)


def submit_command(s: Settings, stage: str, mode: str, platform: dict[str, str]) -> SubmitCommand:
    """The stage's spark-submit command, from the request `deploy run --mode <mode>` sends."""
    if mode == "serverless":
        role_arn = iam.role_arn(ACCOUNT, s.conf["aws.iam.serverless_job_role"])
        return from_job_run(serverless.job_run_request(s, APPLICATION_ID, role_arn, stage), platform)
    return from_step(cluster.step(s, stage), platform)


class Steps:
    """Prints `[n/total] what ... seconds` for each step."""

    def __init__(self, total: int):
        self.total, self.number, self.times = total, 0, {}

    @contextlib.contextmanager
    def step(self, what: str):
        self.number += 1
        print(f"rehearse [{self.number}/{self.total}] {what}", flush=True)
        started = time.monotonic()
        yield
        self.times[what] = time.monotonic() - started
        print(f"rehearse [{self.number}/{self.total}] done in {self.times[what]:.1f} s", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="images drawn from the sample (default: rehearsal.images in conf)")
    parser.add_argument("--full", action="store_true", help="the whole local sample instead of --images")
    parser.add_argument("--mode", choices=["serverless", "cluster"], default="serverless", help="whose submit arguments to use")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (lakes, cluster work folders)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A TERM (a CI timeout, `kill`) unwinds like Ctrl-C: the server and the cluster are stopped,
    # and a second signal does not cut that cleanup short.
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    try:
        local = load_conf([LOCAL_CONF])
        return rehearse(args, local)
    except (RehearsalError, DeployError, ConfError, S3ServerError, ClusterError, SubmitError, ClientError, EnvironmentBuildError) as exc:
        print(f"rehearse: FAILED: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"rehearse: interrupted ({exc}); everything it started was stopped", file=sys.stderr)
        return 130


class Interrupted(BaseException):
    """A TERM or INT arrived; raised once, the signals then ignored while cleanup runs."""


def _stop_on_signal(number, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(number).name)


def rehearse(args: argparse.Namespace, local: Conf) -> int:
    run_dir = Path(resolve_location(local["rehearsal.work_dir"])) / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scratch, logs = run_dir / "scratch", run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    steps = Steps(6)
    started = time.monotonic()
    print(f"rehearse: logs in {logs.relative_to(PROJECT_ROOT) if logs.is_relative_to(PROJECT_ROOT) else logs}")
    ok = False
    try:
        with ExitStack() as stack:
            ok = _run(args, local, scratch, logs, steps, stack)
    finally:
        if ok and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"rehearse: scratch kept for a look: {scratch}")
    total = time.monotonic() - started
    print(f"rehearse: {'PASSED' if ok else 'FAILED'} in {total:.0f} s; " + ", ".join(f"{k.split(':')[0]} {v:.0f} s" for k, v in steps.times.items()))
    return 0 if ok else 1


def _run(args, local: Conf, scratch: Path, logs: Path, steps: Steps, stack: ExitStack) -> bool:
    source = Path(local.path("input.path"))
    if not source.is_dir():
        raise RehearsalError(f"input.path '{source}' of {LOCAL_CONF} does not exist: run `make test-data` (or `make run`) first")
    files = sample.image_files(source, local["input.extensions"])
    files = files if args.full else sample.spread(files, args.images or local["rehearsal.images"])
    if not files:
        raise RehearsalError(f"no image under '{source}' (input.path of {LOCAL_CONF}, extensions {local['input.extensions']})")
    subset = scratch / "input"
    sample.copy_subset(files, source, subset)
    jars = _platform_jars(local)
    bucket = new_bucket_name()
    with patched_environ({BUCKET_ENV: bucket, ENDPOINT_ENV: "http://127.0.0.1:1"}):  # the port is not known yet
        aws = load_conf(AWS_CONFS)

    with steps.step("S3 server and bucket, laid out by `deploy provision`'s code"):
        server = stack.enter_context(LocalS3Server(aws["s3.region"], kms_key_name=aws["s3.encryption_key"]))
        stack.enter_context(patched_environ(server.location_environment(bucket)))
        s = _settings(local, subset, scratch, jars)
        ex = LocalExecutor(server, s.region, io.StringIO())
        storage.provision_bucket(ex, s)
        print(f"  {server.endpoint}, bucket {bucket}; not supported by this server: {', '.join(ex.not_supported) or 'none'}")

    with steps.step("job user with the job role's S3 policy (deploy/iam.py) and the bucket policy's denies"):
        policy = job_user_policy(s)
        credentials = server.add_user(JOB_USER, policy)
        (logs / "job-user-policy.json").write_text(json.dumps(policy, indent=2))
        print(f"  user {JOB_USER}: {len(policy['Statement'])} statements (logs/job-user-policy.json)")

    with steps.step("environment archive (deploy/build_env.sh --host, cached) and `deploy package`"):
        archive, built = environment.cached_archive(Path(resolve_location(local["rehearsal.env_cache_dir"])), logs / "build-env.log")
        print(f"  {archive.name} ({archive.stat().st_size / 2**20:.0f} MB, {'built now' if built else 'cached'})")
        s = _settings(local, subset, scratch, jars, archive)
        ex.out = io.StringIO()
        package.package(ex, s, with_env=True, with_data=True)
        for line in ex.out.getvalue().splitlines():
            if not line.startswith("[aws]"):
                print(f"  {line}")
        driver_env_dir = environment.unpack(archive, scratch / "driver-environment")

    job_env = _job_environment(credentials, s.region)
    with steps.step("Spark standalone cluster: a master and two one-core workers, each its own JVM"):
        _check_executor_fits(s, local["rehearsal.worker_memory"])
        spark_cluster = stack.enter_context(
            StandaloneCluster(
                scratch / "cluster", log_dir=logs, memory_per_worker=local["rehearsal.worker_memory"],
                worker_env={**_base_environment(), **job_env},
            )
        )
        print(f"  {spark_cluster.master_url}: {spark_cluster.alive_workers()} workers alive")

    with steps.step(f"jobs {', '.join(jobs(s))} with the {args.mode} submit arguments"):
        platform = platform_conf(spark_cluster.master_url, server.endpoint, s.region, jars["class_path"])
        # The requests `deploy run` would send with the rehearsal's overlay: the overrides above
        # only place files for `package` and the jars, and are not forwarded to the jobs.
        run_settings = dataclasses.replace(s, job_overrides=())
        for stage in jobs(s):
            command = submit_command(run_settings, stage, args.mode, platform)
            timeout_s = s.conf["aws.serverless.execution_timeout_minutes"] * 60
            _submit(stage, command, scratch / f"driver-{stage}", driver_env_dir, job_env, logs, timeout_s)
            executors = spark_cluster.executor_folders()
            print(f"  {stage}: {len(executors)} executor processes ran in the workers' folders")
            for folder in executors:
                shutil.rmtree(folder, ignore_errors=True)

    with steps.step("read back over S3 with the job user's keys; compare with a local run"):
        return _read_back(s, local, server, credentials, subset, scratch, len(files))


def _settings(local: Conf, subset: Path, scratch: Path, jars: dict, archive: Path | None = None) -> Settings:
    overrides = [
        f"aws.package.dataset_source={subset}",
        f"aws.package.dist_dir={scratch / 'dist'}",
        f"aws.delta_jars=[{', '.join(jars['delta'])}]",
    ]
    if archive:
        overrides.append(f"aws.package.env_archive={archive}")
    return load_settings(AWS_CONFS, overrides)


def _platform_jars(local: Conf) -> dict[str, list[str]]:
    """The jars EMR's release puts on every node, taken from the Ivy cache `make setup` warmed."""
    folder = Path(resolve_location(local["spark.ivy_dir"])) / "jars"
    found = {pattern: sorted(folder.glob(pattern)) for pattern in local["rehearsal.delta_jars"] + local["rehearsal.class_path_jars"]}
    missing = [pattern for pattern, paths in found.items() if not paths]
    if missing:
        raise RehearsalError(f"no jar matching {missing} in {folder}: run `make setup` (it fills the Ivy cache)")
    several = {pattern: [p.name for p in paths] for pattern, paths in found.items() if len(paths) > 1}
    if several:
        raise RehearsalError(f"several jars match in {folder}: {several}; remove the old versions (or the folder, then `make setup`)")
    pick = lambda patterns: [str(found[p][0]) for p in patterns]  # noqa: E731
    return {"delta": pick(local["rehearsal.delta_jars"]), "class_path": pick(local["rehearsal.class_path_jars"])}


def _job_environment(credentials: tuple[str, str], region: str) -> dict[str, str]:
    """What a job's processes know of AWS: the job user's keys (the instance profile's, on EMR)."""
    access_key, secret_key = credentials
    return {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_SESSION_TOKEN": "", "AWS_REGION": region}


def _submit(stage: str, command: SubmitCommand, driver_dir: Path, env_dir: Path, job_env: dict, logs: Path, timeout_s: float) -> None:
    """Run one stage's driver in its own folder, ./environment being the unpacked archive."""
    driver_dir.mkdir(parents=True, exist_ok=True)
    (driver_dir / "environment").symlink_to(env_dir)
    env = {**_base_environment(), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", **job_env, **command.driver_env}
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), *command.arguments]
    (logs / f"{stage}.command").write_text(shlex.join(submit) + "\n")
    out_log, err_log = logs / f"{stage}.out", logs / f"{stage}.log"
    with open(out_log, "w") as out, open(err_log, "w") as err:
        # Its own process group: on any failure here (Ctrl-C, TERM) the driver's JVM and its Python go too.
        driver = subprocess.Popen(submit, cwd=driver_dir, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            driver.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RehearsalError(f"stage {stage} still running after {timeout_s / 60:.0f} min (the job's execution timeout); see {err_log}") from None
        finally:
            end_process_group(driver)
    # The stage's own lines (summary, gate, warnings, its one-line error); library chatter stays in the logs.
    own = [line for path in (out_log, err_log) for line in path.read_text(errors="replace").splitlines() if line.startswith((f"{stage} ", f"{stage}:"))]
    for line in own:
        print(f"  [cluster] {line}")
    if driver.returncode != 0:
        tail = [line for line in err_log.read_text(errors="replace").splitlines() if line.strip() and not line.startswith("[Stage")][-15:]
        raise RehearsalError(f"stage {stage} failed on the cluster (exit {driver.returncode}); last lines of {err_log}:\n" + "\n".join(tail))
    if command.not_applicable:
        print(f"  ({stage}: not applicable on a standalone cluster: {', '.join(command.not_applicable)})")


def _base_environment() -> dict[str, str]:
    """What a process on an EMR node has besides its job's settings: a path, a home, Java, a locale."""
    return {name: os.environ[name] for name in ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR") if name in os.environ}


def _check_executor_fits(s: Settings, worker_memory: str) -> None:
    """An executor larger than a worker never starts: the stage would wait for ever."""
    executor_gb, worker_gb = s.conf["aws.serverless.executor.memory_gb"], _gigabytes(worker_memory)
    if executor_gb > worker_gb:
        raise RehearsalError(
            f"aws.serverless.executor.memory_gb={executor_gb} (conf/rehearse.yaml) exceeds rehearsal.worker_memory="
            f"{worker_memory}: lower the first or raise the second"
        )


def _gigabytes(size: str) -> float:
    number, unit = float(size[:-1]), size[-1].lower()
    return number * {"g": 1, "m": 1 / 1024, "t": 1024}[unit]


def _read_back(s: Settings, local: Conf, server: LocalS3Server, credentials, subset: Path, scratch: Path, images: int) -> bool:
    s3_overrides = [
        f"s3.endpoint={server.endpoint}", "s3.path_style_access=true", "s3.ssl_enabled=false",
        f"s3.region={s.region}", f"lake.root={s.conf['lake.root']}",
    ]
    job_keys = dict(zip((local["s3.access_key_env"], local["s3.secret_key_env"], local["s3.session_token_env"]), (*credentials, "")))
    user = server.client(keys=credentials)
    input_keys = list_keys(user, s.bucket, f"{s.input_prefix}/")
    export_keys = list_keys(user, s.bucket, f"{s.lake_prefix}/{s.conf['lake.exports']}/")
    reference_sets = [f"input.path={subset}", f"lake.root={scratch / 'local-lake'}"]
    reference_args = ["--conf", LOCAL_CONF, *(a for item in reference_sets for a in ("--set", item))]
    with patched_environ(job_keys):
        remote_conf = load_conf([LOCAL_CONF], s3_overrides)
        spark = build_spark_session(remote_conf, "rehearsal-check")
        try:
            # The stages the deployment ran (aws.stages: a prefix of the registry's chain, then its after-chain jobs).
            for stage in [job for job in s.conf["aws.stages"] if job in stages.names()]:
                output = io.StringIO()
                with contextlib.redirect_stdout(output):
                    code = importlib.import_module(f"pipelines.{stage}").main([*reference_args, "--set", f"run.id=local-{stage}"])
                if code != 0:
                    raise RehearsalError(f"the local reference run of {stage} failed (exit {code}): {output.getvalue()[-500:]}")
            remote = compare.lake_tables(spark, remote_conf)
            reference = compare.lake_tables(spark, load_conf([LOCAL_CONF], reference_sets))
        finally:
            spark.stop()
    return _report(images, input_keys, export_keys, remote, reference, s.conf)


def _report(images: int, input_keys: list[str], export_keys: list[str], remote, reference, conf: Conf) -> bool:
    csv_name, parquet_dir = conf["gold.export_csv_name"], conf["gold.export_parquet_dir"]
    checks = {
        f"images under the input prefix: {len(input_keys)} (uploaded {images})": len(input_keys) == images,
        "CSV export in the bucket": any(key.endswith(csv_name) for key in export_keys),
        "Parquet export in the bucket": any(f"/{parquet_dir}/" in key and key.endswith(".parquet") for key in export_keys),
    }
    for table, count in remote.counts.items():
        checks[f"{table}: {count} rows on S3, {reference.counts[table]} in the local run"] = (
            count is not None and count == reference.counts[table]
        )
    for table in ("silver", "gold"):
        checks[f"{table} holds every image: {remote.counts.get(table)} of {images}"] = remote.counts.get(table) == images
    try:
        features = compare.feature_difference(remote.features, reference.features)
        scores = compare.score_difference(remote.scores, reference.scores)
        checks[f"silver features: largest difference {features:.2g} (<= {compare.FEATURE_TOLERANCE:g})"] = features <= compare.FEATURE_TOLERANCE
        checks[f"gold scores, signs aligned: largest difference {scores:.2g} of their scale (<= {compare.SCORE_TOLERANCE:g})"] = scores <= compare.SCORE_TOLERANCE
    except ValueError as exc:
        checks[str(exc)] = False
    for what, passed in checks.items():
        print(f"  {'ok  ' if passed else 'FAIL'} {what}")
    return all(checks.values())
