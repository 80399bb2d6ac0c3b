"""Shared pieces of the reliability suite: stage processes, killing a process tree, lake comparisons.

Faults need real processes: a `kill -9` or two runs at once are `python -m pipelines.<stage>`
subprocesses, each with its own JVM. The clean reference runs and the reruns after a fault call the
stage's own `main(argv)` in this process instead: `build_spark_session` then joins the test session
(the JVM already exists), so they go through exactly the code an operator runs (quality gates
included) without paying for another JVM.

One input folder serves every scenario (40 real sample images, Training and Test, plus a truncated
JPEG and a text file), and one clean lake built from it is the reference every faulty lake must
equal at the end.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from pyspark.sql import functions as F

from pipelines import features, stages
from pipelines.config import PROJECT_ROOT, Conf, load_conf
from pipelines.layout import Layout
from tests.conftest import MODEL_SEED, copy_sample

# Seconds a stage process may take before the test gives up on it: generous, since a 40-image stage
# that takes well under a minute on a quiet 2-core machine took 4 to 6 minutes on a loaded one.
STAGE_TIMEOUT_S = float(os.environ.get("FRUITS_RELIABILITY_STAGE_TIMEOUT_S", "900"))
POLL_S = 0.05
WEIGHTS_FILE = MODEL_SEED / features.WEIGHTS_FILE_NAME
# The image layers (the stages through gold): the faults here are about images, runs and commits;
# the classifier, a model over gold, has its own tests (tests/classifier/).
STAGES = stages.through("gold")
TRAINING_IMAGES, TEST_IMAGES = 32, 8
# Settings every stage process of the suite gets, as a conf overlay (spark.extra takes dotted Spark
# keys, which --set cannot express): no Spark UI (no port hunting between concurrent processes).
SUITE_SPARK_EXTRA = {"spark.ui.enabled": "false"}


# ---------------------------------------------------------------- input and conf


@dataclass(frozen=True)
class SuiteInput:
    root: Path
    images: int  # files bronze must accept
    rejected: int  # files bronze must quarantine


def build_input(root: Path) -> SuiteInput:
    """40 real images under <split>/<label>/, a truncated JPEG in a label folder and a text file."""
    copies = copy_sample(root, TRAINING_IMAGES, "Training") + copy_sample(root, TEST_IMAGES, "Test")
    whole = copies[-1].read_bytes()
    (copies[0].parent / "truncated upload.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "README.txt").write_text("not an image\n", encoding="utf-8")
    return SuiteInput(root, images=len(copies), rejected=1)


def write_overlay(path: Path, spark_extra: dict[str, str]) -> Path:
    """A conf overlay setting `spark.extra` (keys with dots, which --set cannot express)."""
    path.write_text(yaml.safe_dump({"spark": {"extra": spark_extra}}, allow_unicode=True), encoding="utf-8")
    return path


@dataclass(frozen=True)
class StageConf:
    """Conf files and --set overrides shared by every stage run of one scenario (one lake)."""

    lake_root: Path | str
    input_path: Path | str
    conf_files: tuple[str, ...]
    overrides: tuple[str, ...] = ()

    def args(self, run_id: str, *more: str) -> list[str]:
        sets = [
            f"lake.root={self.lake_root}", f"input.path={self.input_path}", f"run.id={run_id}",
            "spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=1g",
            *self.overrides, *more,
        ]
        return [*(a for f in self.conf_files for a in ("--conf", f)), *(a for s in sets for a in ("--set", s))]

    @cached_property
    def conf(self) -> Conf:
        return load_conf(self.conf_files, [f"lake.root={self.lake_root}", f"input.path={self.input_path}", *self.overrides])

    def elsewhere(self, lake_root: Path | str) -> "StageConf":
        """The same conf (input, weights, overlays) pointed at another lake."""
        return StageConf(lake_root, self.input_path, self.conf_files, self.overrides)

    def table_dir(self, table: str) -> Path:
        return Path(Layout.from_conf(self.conf).location(table))

    def staging_table(self, stage: str, table: str, run_id: str) -> Path:
        """A run's private staging table (lake.write_audit_publish)."""
        return Path(Layout.from_conf(self.conf).staging(f"{stage}/{table}", run_id))


@pytest.fixture(scope="session")
def weights_overrides(tmp_path_factory) -> tuple[str, ...]:
    """Silver with the real MobileNetV2 weights of the shared seed (features are compared across runs)."""
    if not WEIGHTS_FILE.is_file():
        pytest.skip(f"MobileNetV2 weights not found at {WEIGHTS_FILE} (silver features are compared across runs)")
    keras_home = tmp_path_factory.mktemp("keras")
    return (f"silver.weights_file={WEIGHTS_FILE}", f"silver.keras_home={keras_home}", "silver.download=false")


@pytest.fixture(scope="session")
def suite_overlay(tmp_path_factory) -> Path:
    return write_overlay(tmp_path_factory.mktemp("conf") / "reliability.yaml", SUITE_SPARK_EXTRA)


def run_main_in_process(stage: str, args: list[str]) -> int:
    """The stage's own entry point, in this process (joins the test SparkSession)."""
    return importlib.import_module(f"pipelines.{stage}").main(args)


# ---------------------------------------------------------------- the reference lake


@dataclass(frozen=True)
class Reference:
    input: SuiteInput
    conf: StageConf


@pytest.fixture(scope="session")
def reference(spark, tmp_path_factory, sample, weights_overrides, suite_overlay) -> Reference:
    """The clean run: bronze, silver and gold once each, in order, on the suite's input."""
    root = tmp_path_factory.mktemp("reference")
    suite_input = build_input(root / "input")
    conf = StageConf(root / "lake", suite_input.root, ("conf/local.yaml", str(suite_overlay)), weights_overrides)
    for stage in STAGES:
        assert run_main_in_process(stage, conf.args(f"clean-{stage}")) == 0, f"the clean {stage} run failed"
    return Reference(suite_input, conf)


def copy_tables(source: StageConf, target: StageConf, tables: list[str]) -> None:
    """Copy published Delta tables (their folders hold only relative paths) into another lake."""
    for table in tables:
        shutil.copytree(source.table_dir(table), target.table_dir(table))


def delta_version_file(table_dir: Path, version: int) -> Path:
    return table_dir / "_delta_log" / f"{version:020d}.json"


# ---------------------------------------------------------------- stage processes


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:  # the process ended
        return []


def start_ticks(pid: int) -> float | None:
    """When the process started: with the pid, identifies it (pids are reused)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_state(pid: int) -> str | None:
    """psutil's status of the process (psutil.STATUS_STOPPED, ...), None once it is gone."""
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return None


def is_running(pid: int, started: float | None = None) -> bool:
    """True while that process (the same start time, when given) exists and is not a zombie."""
    if process_state(pid) in (None, psutil.STATUS_ZOMBIE):
        return False
    return started is None or start_ticks(pid) == started


@dataclass
class StageProcess:
    """One `python -m pipelines.<stage>` in its own session (process group), its output in files."""

    name: str
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    # Every process seen in the stage's tree: pid -> start time (so a reused pid is never signalled).
    tree: dict[int, float] = field(default_factory=dict)

    def remember_tree(self) -> dict[int, float]:
        """Record the current tree (the stage, its JVM, the PySpark daemon and workers)."""
        current = {}
        for pid in (self.process.pid, *descendants(self.process.pid)):
            started = start_ticks(pid)
            if started is not None:
                current[pid] = started
        self.tree.update(current)
        return current

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        """The end of both outputs, after the error headlines of stderr (a Java stack's end hides its cause)."""
        headlines = [
            line[:400] for line in self.errors().splitlines()
            if ("Error" in line or "Exception" in line) and not line.lstrip().startswith("at ")
        ]
        return (
            f"--- {self.name} stdout ---\n{self.output()[-chars:]}\n"
            f"--- {self.name} stderr error headlines ---\n" + "\n".join(headlines[:15]) + "\n"
            f"--- {self.name} stderr ---\n{self.errors()[-chars:]}"
        )

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = STAGE_TIMEOUT_S) -> float:
        """Poll `condition` until true; fail (after cleaning up) if the process ends first or time runs out."""
        started = time.monotonic()
        polls = 0
        while not condition():
            if polls % 20 == 0:
                self.remember_tree()
            polls += 1
            if self.process.poll() is not None:
                self.reap_leftovers()
                pytest.fail(f"{self.name} exited ({self.process.returncode}) before {what}\n{self.tail()}")
            if time.monotonic() - started > timeout:
                self.kill_tree()
                pytest.fail(f"{self.name}: no {what} after {timeout:.0f} s\n{self.tail()}")
            time.sleep(POLL_S)
        return time.monotonic() - started

    def finish(self, timeout: float = STAGE_TIMEOUT_S) -> int:
        """Wait for the exit code; a process still running after `timeout` is killed and the test fails."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            self.remember_tree()
            if time.monotonic() > deadline:
                self.kill_tree()
                pytest.fail(f"{self.name} still running after {timeout:.0f} s (a hang)\n{self.tail()}")
            time.sleep(0.5)
        self.reap_leftovers()
        return self.process.returncode

    def kill_tree(self) -> dict[int, float]:
        """SIGKILL the stage and every descendant: the JVM and the PySpark daemon's own process group.

        The tree is frozen first (SIGSTOP) and listed again until stable, so nothing forked in
        between escapes; then every process, and every process group one of them leads, is killed.
        Returns the killed processes (pid -> start time).
        """
        frozen: dict[int, float] = {}
        while True:
            tree = {pid: t for pid, t in self.remember_tree().items() if pid not in frozen}
            if not tree:
                break
            for pid, started in tree.items():
                _signal(pid, started, signal.SIGSTOP)
            frozen.update(tree)
        for pid, started in frozen.items():
            _signal_group(pid, started, signal.SIGKILL)
            _signal(pid, started, signal.SIGKILL)
        self.process.wait(timeout=60)
        self.reap_leftovers()
        return frozen

    def reap_leftovers(self) -> None:
        """Kill any recorded process of the tree still running (after an exit, none should be)."""
        survivors = {p: t for p, t in self.tree.items() if p != self.process.pid and is_running(p, t)}
        for pid, started in survivors.items():
            _signal(pid, started, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(is_running(p, t) for p, t in survivors.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {sorted(survivors)} of {self.name} survived SIGKILL")
            time.sleep(0.1)


def _signal(pid: int, started: float, sig: int) -> None:
    if is_running(pid, started):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _signal_group(leader: int, started: float, sig: int) -> None:
    """Signal the process group `leader` leads (only groups led by a process of the stage's tree)."""
    try:
        if is_running(leader, started) and os.getpgid(leader) == leader:
            os.killpg(leader, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_stage(stage: str, args: list[str], log_dir: Path, name: str) -> StageProcess:
    """Start `python -m pipelines.<stage> <args>` in a new session, from the repository root (it
    inherits this process's environment: the S3 test sets the server's variables there)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", f"pipelines.{stage}", *args],
            cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )
    return StageProcess(name, process, stdout_path, stderr_path)


@pytest.fixture
def stage_processes():
    """Start stage processes through this fixture: any still running at the end of the test is killed."""
    started: list[StageProcess] = []

    def start(*args, **kwargs) -> StageProcess:
        process = start_stage(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill_tree()
        else:
            process.reap_leftovers()


# ---------------------------------------------------------------- lake snapshots and comparisons

BRONZE_COLUMNS = ("image_id", "path", "label", "split", "size_bytes", "source_size_bytes", "format", "width", "height", "orientation")


def _table(spark, conf, name: str):
    return Layout.from_conf(conf).read(spark, name)


def bronze_rows(spark, conf) -> list[tuple]:
    table = _table(spark, conf, "bronze")
    return [] if table is None else sorted(tuple(r) for r in table.select(*BRONZE_COLUMNS).collect())


def quarantine_rows(spark, conf, stage: str) -> list[tuple]:
    """(path, image_id, reason code) of one stage's quarantine rows."""
    table = _table(spark, conf, "quarantine")
    if table is None:
        return []
    rows = table.where(F.col("stage") == stage).select("path", "image_id", F.split("reason", ":").getItem(0)).collect()
    return sorted((r[0] or "", r[1] or "", r[2]) for r in rows)


def silver_features(spark, conf) -> dict[str, np.ndarray]:
    table = _table(spark, conf, "silver")
    rows = [] if table is None else table.select("image_id", "features").collect()
    by_id = {r.image_id: np.asarray(r.features, dtype=np.float32) for r in rows}
    assert len(by_id) == len(rows), f"silver has duplicate image_ids: {len(rows)} rows, {len(by_id)} ids"
    return by_id


def gold_projection(spark, conf) -> tuple[dict[str, np.ndarray], set[str]]:
    """image_id -> PCA scores, and the model versions gold's rows name."""
    table = _table(spark, conf, "gold")
    rows = [] if table is None else table.select("image_id", "pca", "model_version").collect()
    by_id = {r.image_id: np.asarray(r.pca, dtype=np.float64) for r in rows}
    assert len(by_id) == len(rows), f"gold has duplicate image_ids: {len(rows)} rows, {len(by_id)} ids"
    return by_id, {r.model_version for r in rows}


def assert_no_duplicates(rows: list[tuple], what: str) -> None:
    assert len(set(rows)) == len(rows), f"{what} has duplicate rows"


def assert_bronze_equal(spark, conf, reference_conf) -> None:
    got, want = bronze_rows(spark, conf), bronze_rows(spark, reference_conf)
    assert len({r[0] for r in got}) == len(got) and len({r[1] for r in got}) == len(got), "bronze has duplicates"
    assert got == want, _set_difference("bronze (image_id, path, ...)", got, want)
    got_q, want_q = quarantine_rows(spark, conf, "bronze"), quarantine_rows(spark, reference_conf, "bronze")
    assert_no_duplicates(got_q, "bronze quarantine")
    assert got_q == want_q, _set_difference("bronze quarantine (path, image_id, reason)", got_q, want_q)


def assert_silver_equal(spark, conf, reference_conf, tolerance: float = 1e-5) -> None:
    got, want = silver_features(spark, conf), silver_features(spark, reference_conf)
    assert set(got) == set(want), _set_difference("silver image_ids", sorted(got), sorted(want))
    worst = max(float(np.abs(got[i] - want[i]).max()) for i in want)
    assert worst <= tolerance, f"silver features differ from the clean run's by up to {worst:.3g} (> {tolerance})"
    assert quarantine_rows(spark, conf, "silver") == quarantine_rows(spark, reference_conf, "silver")


def assert_gold_equal(spark, conf, reference_conf, tolerance: float = 1e-6) -> None:
    """Same image_ids, one model version, and the same scores (each component up to its sign).

    A PCA component is defined up to its sign, and two fits of the same rows may sum in another
    order: each component is aligned on the reference's before comparing, relative to its scale.
    """
    (got, got_versions), (want, want_versions) = gold_projection(spark, conf), gold_projection(spark, reference_conf)
    assert set(got) == set(want), _set_difference("gold image_ids", sorted(got), sorted(want))
    assert len(got_versions) == 1 and len(want_versions) == 1, f"gold model versions: {got_versions}"
    ids = sorted(want)
    a, b = np.stack([got[i] for i in ids]), np.stack([want[i] for i in ids])
    assert a.shape == b.shape, f"gold keeps k={a.shape[1]} components, the clean run k={b.shape[1]}"
    signs = np.where(np.sum(a * b, axis=0) < 0, -1.0, 1.0)
    worst = float(np.abs(a * signs - b).max() / np.abs(b).max())
    assert worst <= tolerance, f"gold scores differ from the clean run's by up to {worst:.3g} of their scale"
    assert quarantine_rows(spark, conf, "gold") == quarantine_rows(spark, reference_conf, "gold")


def _set_difference(what: str, got: list, want: list) -> str:
    missing, extra = sorted(set(want) - set(got), key=str), sorted(set(got) - set(want), key=str)
    return f"{what}: {len(got)} rows vs {len(want)} in the clean run; missing {missing[:5]}, unexpected {extra[:5]}"
