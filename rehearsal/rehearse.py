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
import importlib
import io
import shutil
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.executor import DeployError
from deploy.settings import Settings
from deploy.spark_args import jobs
from pipelines import stages
from pipelines.config import PROJECT_ROOT, Conf, ConfError, load_conf, resolve_location
from pipelines.session import build_spark_session
from rehearsal import compare, sample
from rehearsal.environment import EnvironmentBuildError
from rehearsal.s3_server import LocalS3Server, S3ServerError, list_keys, new_bucket_name, patched_environ
from rehearsal.spark_cluster import ClusterError
from rehearsal.stand_ins import (
    LOCAL_CONF,
    Interrupted,
    RehearsalError,
    Steps,
    add_job_user,
    aws_conf,
    aws_settings,
    install_signal_handlers,
    job_environment,
    package_and_unpack,
    platform_jars,
    provision,
    reader_keys,
    reader_overrides,
    run_job,
    run_settings,
    start_cluster,
    submit_command,
)
from rehearsal.submit import SubmitError, platform_conf


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="images drawn from the sample (default: rehearsal.images in conf)")
    parser.add_argument("--full", action="store_true", help="the whole local sample instead of --images")
    parser.add_argument("--mode", choices=["serverless", "cluster"], default="serverless", help="whose submit arguments to use")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (lakes, cluster work folders)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        local = load_conf([LOCAL_CONF])
        return rehearse(args, local)
    except (RehearsalError, DeployError, ConfError, S3ServerError, ClusterError, SubmitError, ClientError, EnvironmentBuildError) as exc:
        print(f"rehearse: FAILED: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"rehearse: interrupted ({exc}); everything it started was stopped", file=sys.stderr)
        return 130


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
    jars = platform_jars(local)
    bucket = new_bucket_name()
    aws = aws_conf(bucket)  # the server's port is not known yet
    placed = lambda archive=None: aws_settings(subset, scratch / "dist", jars, archive)  # noqa: E731

    with steps.step("S3 server and bucket, laid out by `deploy provision`'s code"):
        server = stack.enter_context(LocalS3Server(aws["s3.region"], kms_key_name=aws["s3.encryption_key"]))
        stack.enter_context(patched_environ(server.location_environment(bucket)))
        s = placed()
        not_supported = provision(server, s)
        print(f"  {server.endpoint}, bucket {bucket}; not supported by this server: {', '.join(not_supported) or 'none'}")

    with steps.step("job user with the job role's S3 policy (deploy/iam.py) and the bucket policy's denies"):
        credentials, policy = add_job_user(server, s, logs)
        print(f"  user {credentials[0]}: {len(policy['Statement'])} statements (logs/job-user-policy.json)")

    with steps.step("environment archive (deploy/build_env.sh --host, cached) and `deploy package`"):
        s, driver_env_dir = package_and_unpack(server, local, placed, logs, scratch / "driver-environment")

    job_env = job_environment(credentials, s.region)
    with steps.step("Spark standalone cluster: a master and two one-core workers, each its own JVM"):
        spark_cluster = start_cluster(stack, s, local, scratch / "cluster", logs, job_env)
        print(f"  {spark_cluster.master_url}: {spark_cluster.alive_workers()} workers alive")

    with steps.step(f"jobs {', '.join(jobs(s))} with the {args.mode} submit arguments"):
        platform = platform_conf(spark_cluster.master_url, server.endpoint, s.region, jars["class_path"])
        # The requests `deploy run` would send with the rehearsal's overlay.
        requests = run_settings(s)
        for stage in jobs(s):
            command = submit_command(requests, stage, args.mode, platform)
            timeout_s = s.conf["aws.serverless.execution_timeout_minutes"] * 60
            run_job(stage, command, scratch / f"driver-{stage}", driver_env_dir, job_env, logs, timeout_s)
            executors = spark_cluster.executor_folders()
            print(f"  {stage}: {len(executors)} executor processes ran in the workers' folders")
            for folder in executors:
                shutil.rmtree(folder, ignore_errors=True)

    with steps.step("read back over S3 with the job user's keys; compare with a local run"):
        return _read_back(s, local, server, credentials, subset, scratch, len(files))


def _read_back(s: Settings, local: Conf, server: LocalS3Server, credentials, subset: Path, scratch: Path, images: int) -> bool:
    s3_overrides = reader_overrides(server, s)
    job_keys = reader_keys(local, credentials)
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
            ran = [job for job in s.conf["aws.stages"] if job in stages.names()]
            for stage in ran:
                output = io.StringIO()
                with contextlib.redirect_stdout(output):
                    code = importlib.import_module(f"pipelines.{stage}").main([*reference_args, "--set", f"run.id=local-{stage}"])
                if code != 0:
                    raise RehearsalError(f"the local reference run of {stage} failed (exit {code}): {output.getvalue()[-500:]}")
            tables = compare.tables_of(ran, list(s.conf["lake.tables"]))
            remote = compare.lake_tables(spark, remote_conf, tables)
            reference = compare.lake_tables(spark, load_conf([LOCAL_CONF], reference_sets), tables)
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
