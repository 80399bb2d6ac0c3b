"""The rehearsal's stand-ins for AWS, brought up step by step: shared by `make rehearse` and `make demo`.

Each function is one piece both commands need, so the demo runs exactly what the rehearsal checks:
- `aws_settings`: deploy's Settings with conf/aws.yaml + conf/rehearse.yaml (+ overlays);
- `provision` and `add_job_user`: the bucket laid out by `deploy provision`'s code, a server user
  whose policy is the job role's S3 policy (`job_user_policy`);
- `package_and_unpack`: the environment archive (cached), `deploy package`'s upload, the driver's
  unpacked copy;
- `start_cluster`: the standalone master and two workers, their environment the job user's keys;
- `run_job`: one deploy job (`submit_command`) driven to its end in its own process group;
- `Steps`, `install_signal_handlers`: the timed steps and the TERM/INT handling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shlex
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from botocore.exceptions import ClientError

from deploy import cluster, iam, package, serverless, storage
from deploy.executor import Executor
from deploy.settings import Settings, load_settings
from pipelines.config import Conf, load_conf, resolve_location
from rehearsal import environment
from rehearsal.s3_server import BUCKET_ENV, ENDPOINT_ENV, LocalS3Server, patched_environ
from rehearsal.spark_cluster import SPARK_HOME, StandaloneCluster, end_process_group
from rehearsal.submit import SubmitCommand, from_job_run, from_step

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


def say(line: str) -> None:
    """Print a line at once: a rehearsal's output is followed while it runs (logs, a CI console)."""
    print(line, flush=True)


class Steps:
    """Prints `<name> [n/total] what` then `... done in x s` for each step; keeps the times."""

    def __init__(self, total: int, name: str = "rehearse", out=None):
        self.total, self.name, self.number, self.times = total, name, 0, {}
        self.out = out or say

    @contextlib.contextmanager
    def step(self, what: str):
        self.number += 1
        self.out(f"{self.name} [{self.number}/{self.total}] {what}")
        started = time.monotonic()
        yield
        self.times[what] = time.monotonic() - started
        self.out(f"{self.name} [{self.number}/{self.total}] done in {self.times[what]:.1f} s")


class Interrupted(BaseException):
    """A TERM or INT arrived; raised once, the signals then ignored while cleanup runs."""


def install_signal_handlers() -> None:
    """A TERM (a CI timeout, `kill`) unwinds like Ctrl-C: what was started is stopped by the
    ExitStack, and a second signal does not cut that cleanup short."""
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)


def _stop_on_signal(number, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(number).name)


def aws_conf(bucket: str, confs: tuple[str, ...] = AWS_CONFS) -> Conf:
    """The AWS conf for `bucket` before the server's port is known (the endpoint is a placeholder)."""
    with patched_environ({BUCKET_ENV: bucket, ENDPOINT_ENV: "http://127.0.0.1:1"}):
        return load_conf(list(confs))


def aws_settings(
    subset: Path, dist_dir: Path, jars: dict, archive: Path | None = None, confs: tuple[str, ...] = AWS_CONFS
) -> Settings:
    """deploy's Settings with the rehearsal's placements: the images, the build folder, the Delta jars.

    These overrides only place files for `package` and the jars: `run_settings` drops them before
    the jobs' requests are built, as `deploy run` with the rehearsal's overlay would send them."""
    overrides = [
        f"aws.package.dataset_source={subset}",
        f"aws.package.dist_dir={dist_dir}",
        f"aws.delta_jars=[{', '.join(jars['delta'])}]",
    ]
    if archive:
        overrides.append(f"aws.package.env_archive={archive}")
    return load_settings(list(confs), overrides)


def run_settings(s: Settings, job_overrides: tuple[str, ...] = ()) -> Settings:
    """The settings `deploy run` would hold: the placement overrides gone, `job_overrides` forwarded."""
    return dataclasses.replace(s, job_overrides=tuple(job_overrides))


def platform_jars(local: Conf) -> dict[str, list[str]]:
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


def provision(server: LocalS3Server, s: Settings) -> list[str]:
    """The bucket laid out by `deploy provision`'s own code; returns the requests this server lacks."""
    ex = LocalExecutor(server, s.region, io.StringIO())
    storage.provision_bucket(ex, s)
    return ex.not_supported


def add_job_user(server: LocalS3Server, s: Settings, logs: Path) -> tuple[tuple[str, str], dict]:
    """The job user (the job role's S3 policy and the bucket's denies); its keys and its policy,
    the policy also written to logs/job-user-policy.json."""
    policy = job_user_policy(s)
    credentials = server.add_user(JOB_USER, policy)
    (logs / "job-user-policy.json").write_text(json.dumps(policy, indent=2))
    return credentials, policy


def package_and_unpack(
    server: LocalS3Server, local: Conf, s_placed, logs: Path, driver_env_dir: Path, out=say
) -> tuple[Settings, Path]:
    """The environment archive (deploy/build_env.sh --host, cached by its inputs), `deploy package`'s
    upload of code, environment, weights and images, and the archive unpacked for the driver.

    `s_placed(archive)` gives the Settings that place the archive. Returns them and the driver's
    environment folder; an existing unpacked copy of the same archive is reused."""
    archive, built = environment.cached_archive(Path(resolve_location(local["rehearsal.env_cache_dir"])), logs / "build-env.log")
    out(f"  {archive.name} ({archive.stat().st_size / 2**20:.0f} MB, {'built now' if built else 'cached'})")
    s = s_placed(archive)
    ex = LocalExecutor(server, s.region, io.StringIO())
    package.package(ex, s, with_env=True, with_data=True)
    for line in ex.out.getvalue().splitlines():
        if not line.startswith("[aws]"):
            out(f"  {line}")
    marker = driver_env_dir / ".archive"
    if not (marker.is_file() and marker.read_text() == archive.name):
        environment.unpack(archive, driver_env_dir)
        marker.write_text(archive.name)
    return s, driver_env_dir


def job_environment(credentials: tuple[str, str], region: str) -> dict[str, str]:
    """What a job's processes know of AWS: the job user's keys (the instance profile's, on EMR)."""
    access_key, secret_key = credentials
    return {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_SESSION_TOKEN": "", "AWS_REGION": region}


def reader_overrides(server: LocalS3Server, s: Settings) -> list[str]:
    """--set items that point conf/local.yaml at the lake the jobs wrote on the local server."""
    return [
        f"s3.endpoint={server.endpoint}", "s3.path_style_access=true", "s3.ssl_enabled=false",
        f"s3.region={s.region}", f"lake.root={s.conf['lake.root']}",
    ]


def reader_keys(local: Conf, credentials: tuple[str, str]) -> dict[str, str]:
    """The job user's keys under the variables conf/local.yaml names (s3.*_env), for a reader session."""
    names = (local["s3.access_key_env"], local["s3.secret_key_env"], local["s3.session_token_env"])
    return dict(zip(names, (*credentials, "")))


def base_environment() -> dict[str, str]:
    """What a process on an EMR node has besides its job's settings: a path, a home, Java, a locale."""
    return {name: os.environ[name] for name in ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR") if name in os.environ}


def start_cluster(stack: ExitStack, s: Settings, local: Conf, base_dir: Path, logs: Path, job_env: dict) -> StandaloneCluster:
    """A master and two one-core workers on 127.0.0.1, stopped when `stack` closes."""
    check_executor_fits(s, local["rehearsal.worker_memory"])
    return stack.enter_context(
        StandaloneCluster(
            base_dir, log_dir=logs, memory_per_worker=local["rehearsal.worker_memory"],
            worker_env={**base_environment(), **job_env},
        )
    )


def run_job(stage: str, command: SubmitCommand, driver_dir: Path, env_dir: Path, job_env: dict, logs: Path, timeout_s: float, out=None) -> None:
    """Run one job's driver in its own folder, ./environment being the unpacked archive."""
    out = out or say
    driver_dir.mkdir(parents=True, exist_ok=True)
    link = driver_dir / "environment"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(env_dir)
    env = {**base_environment(), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", **job_env, **command.driver_env}
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), *command.arguments]
    (logs / f"{stage}.command").write_text(shlex.join(submit) + "\n")
    out_log, err_log = logs / f"{stage}.out", logs / f"{stage}.log"
    with open(out_log, "w") as stdout, open(err_log, "w") as stderr:
        # Its own process group: on any failure here (Ctrl-C, TERM) the driver's JVM and its Python go too.
        driver = subprocess.Popen(submit, cwd=driver_dir, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            driver.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RehearsalError(f"stage {stage} still running after {timeout_s / 60:.0f} min (the job's execution timeout); see {err_log}") from None
        finally:
            end_process_group(driver)
    # The stages' own lines (summary, gate, warnings, their one-line errors); library chatter stays in the logs.
    prefixes = tuple(p for name in own_line_names(stage) for p in (f"{name} ", f"{name}:"))
    for line in (line for path in (out_log, err_log) for line in path.read_text(errors="replace").splitlines()):
        if line.startswith(prefixes):
            out(f"  [cluster] {line}")
    if driver.returncode != 0:
        raise RehearsalError(
            f"stage {stage} failed on the cluster (exit {driver.returncode}); last lines of {out_log.name} and {err_log.name} "
            f"in {logs}:\n" + "\n".join(failure_tail(out_log, err_log))
        )
    if command.not_applicable:
        out(f"  ({stage}: not applicable on a standalone cluster: {', '.join(command.not_applicable)})")


# Lines every JVM prints, which say nothing about a failure.
NOISE = ("SLF4J:", "WARNING: Using incubator modules", "[Stage")


def failure_tail(*logs: Path, lines: int = 15) -> list[str]:
    """The last lines of a failed driver's output and log (the stage's own message first: a gate's
    failed expectations go to its output), the JVMs' routine noise left out."""
    kept = []
    for log in logs:
        kept += [line for line in log.read_text(errors="replace").splitlines() if line.strip() and not line.startswith(NOISE)][-lines:]
    return kept


def own_line_names(job: str) -> tuple[str, ...]:
    """The prefixes of a job's own output lines: the stage's name, or for the chain job every
    stage's, the catalog's and the chain runner's own (`run:`)."""
    from pipelines import stages
    from deploy.spark_args import CHAIN_JOB

    if job == CHAIN_JOB:
        return (*stages.names(), *stages.AFTER_CHAIN, "run", "quality")
    return (job,)


def check_executor_fits(s: Settings, worker_memory: str) -> None:
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
