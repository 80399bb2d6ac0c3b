"""Peak memory of a measurement's processes, sampled with psutil in a background thread.

psutil walks the process tree and reads each process's memory (on Linux from /proc: `status` for
RSS, `smaps_rollup` for PSS), which this module once did by hand.

What is sampled, every `poll_seconds`:
- the Python driver: this process, resident set size (RSS);
- the JVM started by PySpark (a descendant whose program is `java`): RSS, and through the py4j
  gateway its heap in use and its heap after the latest garbage collection;
- the Python workers (every Python descendant of the JVM: `pyspark.daemon` and the workers it
  forks): the largest single worker's RSS and the sum of their proportional set sizes (PSS).
  Forked workers share the daemon's pages, so a sum of RSS would count those pages once per
  worker; PSS splits each shared page between its sharers, so the sum is the real total.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

MIB = 1024 * 1024


def is_jvm(cmdline: Sequence[str]) -> bool:
    return bool(cmdline) and os.path.basename(cmdline[0]) == "java"


def is_python(cmdline: Sequence[str]) -> bool:
    return bool(cmdline) and os.path.basename(cmdline[0]).startswith("python")


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:  # the process ended
        return []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def jvms(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in _descendants(root) if is_jvm(_cmdline(p))]


def python_workers(root: psutil.Process) -> list[psutil.Process]:
    """Python processes below the JVM(s) under `root`: PySpark's daemon and the workers it forks."""
    return [p for jvm in jvms(root) for p in _descendants(jvm) if is_python(_cmdline(p))]


def rss_bytes(process: psutil.Process) -> int | None:
    try:
        return process.memory_info().rss
    except psutil.Error:  # the process ended between the listing and the read
        return None


def pss_bytes(process: psutil.Process) -> int | None:
    """PSS (Linux); RSS where it cannot be read."""
    try:
        return process.memory_full_info().pss
    except (psutil.Error, AttributeError):
        return rss_bytes(process)


def jvm_heap_probe(spark) -> Callable[[], tuple[int, int | None]]:
    """A function giving (heap in use, heap after the JVM's latest garbage collection) in bytes.

    Heap after a collection is what the JVM really keeps (live data plus what the collector chose
    not to free yet); heap in use alone is a saw-tooth that depends on when the collector ran. It
    comes from the collectors' last GcInfo (com.sun.management), summed over the heap pools.
    py4j serves each Python thread on its own JVM thread, so the sampler thread can call it while
    the main thread runs a job.
    """
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    memory = management.getMemoryMXBean()
    heap_pools = [p.getName() for p in management.getMemoryPoolMXBeans() if p.getType().name() == "HEAP"]
    collectors = list(management.getGarbageCollectorMXBeans())

    def probe() -> tuple[int, int | None]:
        infos = [info for info in (c.getLastGcInfo() for c in collectors) if info is not None]
        after_gc = None
        if infos:
            usage = max(infos, key=lambda info: info.getEndTime()).getMemoryUsageAfterGc()
            after_gc = sum(usage.get(name).getUsed() for name in heap_pools if usage.containsKey(name))
        return memory.getHeapMemoryUsage().getUsed(), after_gc

    return probe


@dataclass
class Peaks:
    """Largest values seen, in bytes (None: never observed)."""

    python_driver_rss: int | None = None
    jvm_rss: int | None = None
    jvm_heap_used: int | None = None
    jvm_heap_after_gc: int | None = None
    worker_max_rss: int | None = None
    workers_pss_sum: int | None = None
    workers_seen: set[int] = field(default_factory=set)
    samples: int = 0
    load_sum: float = 0.0

    def raise_to(self, name: str, value: int | None) -> None:
        if value is not None and (getattr(self, name) is None or value > getattr(self, name)):
            setattr(self, name, value)

    def as_mib(self) -> dict:
        """JSON-ready: MiB rounded to 0.1, the count of worker processes seen, the mean load average."""
        names = ("python_driver_rss", "jvm_rss", "jvm_heap_used", "jvm_heap_after_gc", "worker_max_rss", "workers_pss_sum")
        out = {f"{n}_mib": (round(getattr(self, n) / MIB, 1) if getattr(self, n) is not None else None) for n in names}
        out["python_workers_seen"] = len(self.workers_seen)
        out["samples"] = self.samples
        out["mean_load_average_1m"] = round(self.load_sum / self.samples, 2) if self.samples else None
        return out


class MemorySampler:
    """Context manager polling the memory of this process tree until it exits.

    `heap_probe` (from jvm_heap_probe) adds the JVM heap; without it only the processes are read.
    """

    def __init__(self, poll_seconds: float, heap_probe: Callable[[], tuple[int, int | None]] | None = None):
        self.poll_seconds = poll_seconds
        self.heap_probe = heap_probe
        self.peaks = Peaks()
        self._root = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-memory-sampler", daemon=True)

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.sample()

    def sample(self) -> None:
        peaks = self.peaks
        peaks.raise_to("python_driver_rss", rss_bytes(self._root))
        for jvm in jvms(self._root):
            peaks.raise_to("jvm_rss", rss_bytes(jvm))
        workers = python_workers(self._root)
        total = 0
        for worker in workers:
            peaks.raise_to("worker_max_rss", rss_bytes(worker))
            total += pss_bytes(worker) or 0
            peaks.workers_seen.add(worker.pid)
        if workers:
            peaks.raise_to("workers_pss_sum", total)
        if self.heap_probe is not None:
            try:
                used, after_gc = self.heap_probe()
            except Exception:  # noqa: BLE001 - the gateway is closing at the end of the measurement
                used, after_gc = None, None
            peaks.raise_to("jvm_heap_used", used)
            peaks.raise_to("jvm_heap_after_gc", after_gc)
        peaks.samples += 1
        peaks.load_sum += os.getloadavg()[0]

