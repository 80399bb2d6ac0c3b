"""`make demo`: the defence's 2-minute demo, live on the rehearsal (docs/deploy.md, "Demo").

Before the talk, `make demo ARGS=--prepare` builds the lake the demo starts from: the rehearsal's
S3 server (MinIO, its data kept in demo.work_dir), the bucket laid out by `deploy provision`'s
code, the job user with the job role's S3 policy, `deploy package`'s upload of code, environment,
weights and a small sample (conf demo.*), the standalone cluster, and the chain (bronze, silver,
gold, classifier, catalog) as one application with deploy's own submit arguments.

`make demo` then serves that lake again, starts the cluster and an analyst's Spark SQL session
(not timed: done before the presenter presses Enter), and runs the live part, each step timed:
1. new photos arrive: Test photos of the demo's fruits not yet in the bucket are uploaded under the
   input prefix, as `deploy package` uploads (the operator's keys: the job role only reads input);
2. the chain runs on the cluster as one application, with the job user's keys: bronze ingests only
   the new files, silver featurises only them, gold projects them with the current PCA, the
   classifier scores them (no refit, no retraining);
3. Spark SQL: the new rows per layer, the new images' labels, PCA head and predicted fruit.
Everything started is stopped at the end, even on failure or Ctrl-C. `--screenshots` also captures
the evidence the deck shows (rehearsal/screenshots.py) and writes the transcript (conf demo.*).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError
from pyspark.errors import PySparkException

from deploy import package
from deploy.executor import DeployError
from deploy.settings import Settings
from deploy.spark_args import CHAIN_JOB, jobs
from pipelines.catalog import CatalogError
from pipelines.config import Conf, ConfError, load_conf, resolve_location
from pipelines.sql import WriteRefused
from rehearsal import query, sample
from rehearsal.environment import EnvironmentBuildError
from rehearsal.s3_server import LocalS3Server, S3ServerError, free_port, list_keys, new_bucket_name, patched_environ
from rehearsal.spark_cluster import ClusterError, StandaloneCluster
from rehearsal.stand_ins import (
    AWS_CONFS,
    LOCAL_CONF,
    Interrupted,
    LocalExecutor,
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
    run_job,
    run_settings,
    start_cluster,
    submit_command,
)
from rehearsal.submit import SubmitError, platform_conf

STATE_FILE = "state.json"
TRAINING, TEST = "Training", "Test"


class Transcript:
    """The demo's output: printed at once, and kept with the seconds since the start for the transcript."""

    def __init__(self):
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append((time.monotonic() - self.started, line))

    def text(self) -> str:
        return "\n".join(f"[{at:6.1f} s] {line}" for at, line in self.lines) + "\n"


# ---------------------------------------------------------------- pure choices (unit-tested)


def labelled(files: list[Path], source: Path) -> dict[tuple[str, str], list[Path]]:
    """Files by (split, label), from the `<split>/<label>/<file>` layout of the sample, sorted."""
    grouped: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(files):
        parts = path.relative_to(source).parts
        if len(parts) >= 3:
            grouped.setdefault((parts[0], parts[1]), []).append(path)
    return grouped


def prepared_files(grouped: dict, labels: list[str], training: int, test: int) -> list[Path]:
    """The prepared lake's images: `training` Training and `test` Test images of each label, spread
    through its sorted files (consecutive names are near-identical frames of one rotation: the first
    ten alone left the classifier at 0.72 Test accuracy, under its gate).

    A label missing from either split is an error: the classifier's gate refuses a label seen only
    in Test, and a label without Test images has no accuracy."""
    missing = [f"{split}/{label}" for label in labels for split in (TRAINING, TEST) if not grouped.get((split, label))]
    if missing:
        raise RehearsalError(f"demo.labels: no images in {', '.join(missing)} of input.path ({LOCAL_CONF}); pick labels of the sample")
    return [p for label in labels for split, count in ((TRAINING, training), (TEST, test)) for p in sample.spread(grouped[(split, label)], count)]


def new_photos(grouped: dict, labels: list[str], count: int, taken: set[str], source: Path) -> list[Path]:
    """`count` Test photos of the demo's labels not yet in the bucket (`taken`: their relative
    paths), one label after the other so the increment spreads across the fruits."""
    queues = [[p for p in grouped.get((TEST, label), []) if p.relative_to(source).as_posix() not in taken] for label in labels]
    chosen: list[Path] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    if len(chosen) < count:
        raise RehearsalError(
            f"only {len(chosen)} Test photos of demo.labels are not in the bucket yet ({count} wanted): "
            "run `make demo ARGS=--prepare` again for a fresh lake"
        )
    return chosen


def sql_statements(run_id: str, database: str) -> list[tuple[str, str]]:
    """The live part's queries: (what it shows, the statement), on the catalog's tables."""
    new = f"run_id = '{run_id}'"
    counts = "\nUNION ALL ".join(
        f"SELECT '{table}' AS layer, count_if({new}) AS new_rows, count(*) AS all_rows FROM {database}.{table}"
        for table in ("bronze", "silver", "gold", "classifier")
    )
    rows = (
        "SELECT g.label, c.prediction, round(c.probability, 3) AS probability,\n"
        "       transform(slice(g.pca, 1, 4), x -> round(x, 2)) AS pca_head, g.split\n"
        f"FROM {database}.gold g JOIN {database}.classifier c ON g.image_id = c.image_id\n"
        f"WHERE g.{new} ORDER BY g.label"
    )
    return [("rows each layer gained in this run", counts), ("the new photos: label, predicted fruit, PCA head", rows)]


def fits(seconds: float, budget: float) -> str:
    return f"{seconds:.0f} s for the live part: {'fits' if seconds <= budget else 'does NOT fit'} the {budget:.0f} s slot"


# ---------------------------------------------------------------- state kept between --prepare and the live runs


@dataclass
class DemoState:
    bucket: str
    server: dict[str, str]
    job_keys: tuple[str, str] | None = None
    archive: str | None = None
    images: int = 0
    runs: list[str] = field(default_factory=list)

    @staticmethod
    def load(work: Path) -> "DemoState":
        path = work / STATE_FILE
        if not path.is_file():
            raise RehearsalError(f"no prepared lake ({path} is missing): run `make demo ARGS=--prepare` first (about 15 minutes)")
        data = json.loads(path.read_text())
        state = DemoState(**{**data, "job_keys": tuple(data["job_keys"]) if data.get("job_keys") else None})
        if not (state.job_keys and state.archive and state.images):
            raise RehearsalError(f"{path}: the last `make demo ARGS=--prepare` did not finish: run it again")
        return state

    def save(self, work: Path) -> None:
        """The local server's throwaway root and job keys: readable by this user only (git-ignored folder)."""
        path = work / STATE_FILE
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
        path.write_text(json.dumps({**self.__dict__, "job_keys": list(self.job_keys) if self.job_keys else None}, indent=2))


# ---------------------------------------------------------------- the two phases


@dataclass
class Context:
    local: Conf
    work: Path
    out: Transcript
    jars: dict
    confs: tuple[str, ...]


def context(local: Conf, out: Transcript) -> Context:
    work = Path(resolve_location(local["demo.work_dir"]))
    return Context(local, work, out, platform_jars(local), (*AWS_CONFS, local["demo.aws_conf"]))


def sample_groups(local: Conf) -> tuple[Path, dict]:
    source = Path(local.path("input.path"))
    if not source.is_dir():
        raise RehearsalError(f"input.path '{source}' of {LOCAL_CONF} does not exist: run `make test-data` (or `make run`) first")
    return source, labelled(sample.image_files(source, local["input.extensions"]), source)


def prepare(ctx: Context) -> int:
    local, work, out = ctx.local, ctx.work, ctx.out
    source, grouped = sample_groups(local)
    files = prepared_files(grouped, local["demo.labels"], local["demo.training_per_label"], local["demo.test_per_label"])
    # A fresh lake: everything of the last one goes, but the driver's unpacked environment (reused
    # when it is the same archive's: package_and_unpack checks).
    for old in (work.iterdir() if work.exists() else ()):
        if old.name != "driver-environment":
            discard(old) if old.is_dir() else old.unlink()
    logs = work / "logs" / "prepare"
    logs.mkdir(parents=True)
    subset = work / "input-prepared"
    sample.copy_subset(files, source, subset)
    state = DemoState(bucket=new_bucket_name("fruits-demo"), server={})
    aws = aws_conf(state.bucket, ctx.confs)
    placed = lambda archive=None: aws_settings(subset, work / "dist", ctx.jars, archive, ctx.confs)  # noqa: E731
    steps = Steps(5, "demo --prepare", out)
    with ExitStack() as stack:
        with steps.step("S3 server (data kept in demo.work_dir) and bucket, laid out by `deploy provision`'s code"):
            server = stack.enter_context(LocalS3Server(aws["s3.region"], kms_key_name=aws["s3.encryption_key"], home=work / "s3"))
            state.server = server.home_secrets()
            state.save(work)
            stack.enter_context(patched_environ(server.location_environment(state.bucket)))
            s = placed()
            provision(server, s)
            out(f"  {server.endpoint}, bucket {state.bucket}")
        with steps.step("job user with the job role's S3 policy"):
            state.job_keys, policy = add_job_user(server, s, logs)
            out(f"  user {state.job_keys[0]}: {len(policy['Statement'])} statements")
        with steps.step(f"environment archive and `deploy package` ({len(files)} images of {len(local['demo.labels'])} fruits)"):
            s, driver_env = package_and_unpack(server, local, placed, logs, work / "driver-environment", out)
        job_env = job_environment(state.job_keys, s.region)
        with steps.step("Spark standalone cluster: a master and two one-core workers"):
            # After the cluster stops, not within a timed step: each executor unpacked the archive there (gigabytes).
            stack.callback(discard, work / "cluster")
            spark_cluster = start_cluster(stack, s, local, work / "cluster", logs, job_env)
        run_id = "demo-prepare-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        with steps.step(f"the chain ({', '.join(s.conf['aws.stages'])}) on the cluster, job {', '.join(jobs(s))}"):
            run_chain(ctx, s, server, spark_cluster, job_env, driver_env, logs, run_id)
    state.archive, state.images, state.runs = str(s.conf["aws.package.env_archive"]), len(files), [run_id]
    state.save(work)
    out(f"demo --prepare: ready in {sum(steps.times.values()):.0f} s: {len(files)} images in the lake; `make demo` runs the live part")
    return 0


def run_chain(ctx: Context, s: Settings, server, spark_cluster: StandaloneCluster, job_env: dict, driver_env: Path, logs: Path,
              run_id: str, ui_port: int | None = None) -> None:
    """deploy's chain job (aws.one_application) on the cluster, every stage's rows tagged `run_id`."""
    platform = platform_conf(spark_cluster.master_url, server.endpoint, s.region, ctx.jars["class_path"])
    if ui_port:
        platform["spark.ui.port"] = str(ui_port)
    for job in jobs(s):
        if job != CHAIN_JOB:
            raise RehearsalError(f"{ctx.local['demo.aws_conf']} must set aws.one_application: true (the demo runs one application)")
        command = submit_command(run_settings(s, (f"run.id={run_id}",)), job, "serverless", platform)
        timeout_s = s.conf["aws.serverless.execution_timeout_minutes"] * 60
        run_job(job, command, ctx.work / "driver", driver_env, job_env, logs, timeout_s, ctx.out)


def live(ctx: Context, pause: bool, screenshots: bool) -> int:
    local, work, out = ctx.local, ctx.work, ctx.out
    state = DemoState.load(work)
    archive = Path(state.archive)
    if not archive.is_file():
        raise RehearsalError(f"the environment archive {archive} of the prepared lake is gone: run `make demo ARGS=--prepare` again")
    source, grouped = sample_groups(local)
    run_id = "demo-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logs = work / "logs" / run_id
    logs.mkdir(parents=True)
    aws = aws_conf(state.bucket, ctx.confs)
    with ExitStack() as stack:
        out("demo: setting up before the live part (not timed): the S3 server on the prepared lake, the cluster, the SQL session")
        server = stack.enter_context(
            LocalS3Server(aws["s3.region"], kms_key_name=aws["s3.encryption_key"], home=work / "s3", secrets_of_home=state.server)
        )
        stack.enter_context(patched_environ(server.location_environment(state.bucket)))
        s = aws_settings(work / "input-prepared", work / "dist", ctx.jars, archive, ctx.confs)
        job_env = job_environment(state.job_keys, s.region)
        stack.callback(discard, work / "cluster")  # after the cluster stops
        spark_cluster = start_cluster(stack, s, local, work / "cluster", logs, job_env)
        job_client = server.client(keys=state.job_keys)
        taken = {key[len(s.input_prefix) + 1:] for key in list_keys(job_client, s.bucket, f"{s.input_prefix}/")}
        photos = new_photos(grouped, local["demo.labels"], local["demo.new_photos"], taken, source)
        session = stack.enter_context(query.Session(local, server, s, state.job_keys, work))
        ui_port = free_port()
        out(f"  S3 {server.endpoint} (bucket {s.bucket}, {len(taken)} images), Spark master UI http://127.0.0.1:{spark_cluster.ui_port}/, "
            f"{spark_cluster.alive_workers()} workers")
        if pause:
            input("demo: ready. Press Enter to start the live part (Ctrl-C stops everything) ")
        capture = None
        if screenshots:
            from rehearsal import screenshots as shots

            capture = stack.enter_context(shots.Capture(local, spark_cluster, ui_port, logs))

        out(f"demo: live part, run {run_id}")
        steps = Steps(3, "demo", out)
        with steps.step(f"{len(photos)} new photos arrive in s3://{s.bucket}/{s.input_prefix}/"):
            upload(server, s, photos, source, out)
        with steps.step("the chain on the cluster, one application: bronze, silver, gold, classifier, catalog"):
            out(f"  Spark UI of the application while it runs: http://127.0.0.1:{ui_port}/")
            if capture:
                capture.during_application()
            run_chain(ctx, s, server, spark_cluster, job_env, work / "driver-environment", logs, run_id, ui_port)
        with steps.step("Spark SQL on the lake: the new rows"):
            for what, statement in sql_statements(run_id, local["catalog.database"]):
                out(f"  -- {what}")
                for line in session.run(statement):
                    out(f"  {line}")
        total = sum(steps.times.values())
        out(f"demo: {fits(total, local['demo.budget_seconds'])} (" + ", ".join(f"step {i} {t:.0f} s" for i, t in enumerate(steps.times.values(), 1)) + ")")
        state.runs.append(run_id)
        state.save(work)
        if capture:
            capture.after_run(server, s, state.job_keys, photos, source, out.lines)
    return 0


def discard(folder: Path) -> None:
    """Delete a scratch folder; renamed first, so a slow delete interrupted leaves no half folder in the way."""
    if folder.exists():
        doomed = folder.with_name(f".{folder.name}-deleting-{time.time_ns()}")
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def upload(server: LocalS3Server, s: Settings, photos: list[Path], source: Path, out) -> None:
    """The photos under the input prefix, as `deploy package` uploads them (encryption asked explicitly)."""
    ex = LocalExecutor(server, s.region, io.StringIO())
    files = [package.local_file(p, f"{s.input_prefix}/{p.relative_to(source).as_posix()}") for p in photos]
    uploaded, _ = package.sync(ex, s, files, s.input_prefix)
    for p in photos:
        out(f"  + {p.relative_to(source).as_posix()} ({p.stat().st_size / 1024:.0f} KB)")
    if uploaded != len(photos):
        raise RehearsalError(f"{len(photos) - uploaded} of the new photos were already in the bucket: run `make demo ARGS=--prepare` again")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the lake the demo starts from (before the talk, ~15 min)")
    parser.add_argument("--no-pause", action="store_true", help="run the live part at once instead of waiting for Enter")
    parser.add_argument(
        "--screenshots", action="store_true",
        help="also capture the deck's screenshots and write the transcript (conf demo.screenshots_dir, demo.transcript)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="a setting of conf/local.yaml for this run, e.g. demo.new_photos=6 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    out = Transcript()
    try:
        local = load_conf([LOCAL_CONF], args.overrides)
        ctx = context(local, out)
        if args.prepare:
            return prepare(ctx)
        return live(ctx, pause=not (args.no_pause or args.screenshots), screenshots=args.screenshots)
    except (
        RehearsalError, DeployError, ConfError, S3ServerError, ClusterError, SubmitError, ClientError, EnvironmentBuildError,
        CatalogError, WriteRefused, PySparkException,
    ) as exc:
        print(f"demo: FAILED: {_first_line(exc)}", file=sys.stderr)
        return 1
    except (Interrupted, EOFError) as exc:
        print(f"demo: interrupted ({exc or 'no input'}); everything it started was stopped", file=sys.stderr)
        return 130


def _first_line(exc: BaseException) -> str:
    """Our errors are one line (a failed stage adds its log's tail); Spark's start with theirs."""
    text = str(exc)
    return text if isinstance(exc, RehearsalError) else text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
