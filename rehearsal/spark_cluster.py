"""A Spark standalone cluster on 127.0.0.1: one master and N workers, each its own JVM.

Why: under `local[*]` the driver and the executors share one JVM, so nothing proves that what the
driver broadcasts (silver's weights), ships (`--py-files`, `spark.archives`) or configures reaches
executors in other processes. Here every executor is a separate JVM started by a worker, and its
Python workers run the interpreter of the unpacked environment archive, as on EMR.

The classes come from pyspark's own jars (`org.apache.spark.deploy.master.Master` and `...Worker`,
started with pyspark's `bin/spark-class`): nothing to install. Each process runs in its own process
group, so `stop()` also ends the executors and Python workers a worker started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from rehearsal.s3_server import free_port

SPARK_HOME = Path(pyspark.__file__).parent
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The local cluster did not start; the message names the process and its log."""


@dataclass
class StandaloneCluster:
    """Master and workers under `base_dir` (logs, work folders), stopped by `stop()` or on exit.

    `worker_env` is the workers' whole environment (hence their executors'): on EMR an executor gets
    its AWS credentials from the instance profile; here they are the job user's keys, given this way,
    and nothing else of the caller's environment leaks in. Logs go to `log_dir`, kept after a run.
    """

    base_dir: Path
    log_dir: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "4g"
    worker_env: dict[str, str] | None = None  # None: the caller's environment
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port(self.host)
        self.ui_port = free_port(self.host)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def start(self) -> "StandaloneCluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("master", [MASTER_CLASS, "--host", self.host, "--port", str(self.port), "--webui-port", str(self.ui_port)])
        for index in range(1, self.workers + 1):
            work_dir = self.base_dir / f"worker-{index}"
            work_dir.mkdir(exist_ok=True)
            self._spawn(
                f"worker-{index}",
                [
                    WORKER_CLASS, "--host", self.host, "--cores", str(self.cores_per_worker),
                    "--memory", self.memory_per_worker, "--work-dir", str(work_dir),
                    "--webui-port", str(free_port(self.host)), self.master_url,
                ],
                self.worker_env,
            )
        self._wait_for_workers()
        return self

    def stop(self) -> None:
        """End every process group started here (workers first, then the master); idempotent."""
        for process in reversed(self.processes):
            end_process_group(process)
        self.processes.clear()

    def __enter__(self) -> "StandaloneCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive_workers(self) -> int:
        """Workers registered and ALIVE, from the master's JSON status page."""
        with urllib.request.urlopen(f"http://{self.host}:{self.ui_port}/json/", timeout=5) as response:
            status = json.load(response)
        return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")

    def executor_folders(self) -> list[Path]:
        """Every executor's working folder (one per application and executor) under the workers."""
        return sorted(p for p in self.base_dir.glob("worker-*/app-*/*") if p.is_dir())

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"spark-{name}.log"

    def _spawn(self, name: str, arguments: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**(extra_env if extra_env is not None else os.environ), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": self.host}
        with open(self.log_path(name), "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [str(SPARK_HOME / "bin" / "spark-class"), *arguments],
                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            ended = [p for p in self.processes if p.poll() is not None]
            if ended:
                raise ClusterError(
                    f"a Spark process ended during start-up (exit {ended[0].returncode}); see the spark-*.log files in {self.log_dir}"
                )
            try:
                if self.alive_workers() == self.workers:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise ClusterError(
            f"{self.workers} workers did not register with {self.master_url} within {self.start_timeout_s:.0f} s; "
            f"see {self.log_path('master')} and the worker logs beside it"
        )


def end_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group (the JVM and whatever it started), SIGKILL what is left."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
