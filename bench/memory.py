"""Peak memory of a measurement's processes, sampled from /proc in a background thread.

Why /proc polling rather than a library: the bench must not add a dependency (psutil) to the
locked environment, and everything it needs is in three files per process: `stat` (parent pid,
to find the measurement's descendants), `cmdline` (to tell the JVM from the Python workers) and
`smaps_rollup`/`status` (memory).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    cmdline: tuple[str, ...]


def parse_stat_ppid(stat_line: str) -> int:
    """Parent pid from a /proc/<pid>/stat line; the command name in parentheses may hold spaces."""
    return int(stat_line[stat_line.rindex(")") + 2 :].split()[1])


def descendants(root: int, processes: Iterable[ProcessInfo]) -> list[ProcessInfo]:
    """Every process below `root` in the parent tree (not `root` itself)."""
    children: dict[int, list[ProcessInfo]] = {}
    for info in processes:
        children.setdefault(info.ppid, []).append(info)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def is_jvm(info: ProcessInfo) -> bool:
    return bool(info.cmdline) and os.path.basename(info.cmdline[0]) == "java"


def is_python(info: ProcessInfo) -> bool:
    return bool(info.cmdline) and os.path.basename(info.cmdline[0]).startswith("python")


def python_workers(root: int, processes: list[ProcessInfo]) -> list[ProcessInfo]:
    """Python processes below the JVM(s) under `root`: PySpark's daemon and the workers it forks."""
    jvms = [p for p in descendants(root, processes) if is_jvm(p)]
    return [p for jvm in jvms for p in descendants(jvm.pid, processes) if is_python(p)]


def parse_kib(text: str, key: str) -> int | None:
    """Bytes of a `Key:   123 kB` line of /proc/<pid>/status or smaps_rollup, None when absent."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:  # the process ended between the listing and the read
        return None


def list_processes() -> list[ProcessInfo]:
    processes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        cmdline = _read(f"/proc/{entry}/cmdline")
        if stat is None or cmdline is None:
            continue
        processes.append(ProcessInfo(int(entry), parse_stat_ppid(stat), tuple(a for a in cmdline.split("\0") if a)))
    return processes


def rss_bytes(pid: int) -> int | None:
    status = _read(f"/proc/{pid}/status")
    return parse_kib(status, "VmRSS") if status else None


def pss_bytes(pid: int) -> int | None:
    """PSS from smaps_rollup (Linux >= 4.14); RSS where that file is not readable."""
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    pss = parse_kib(rollup, "Pss") if rollup else None
    return pss if pss is not None else rss_bytes(pid)


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

    `heap_probe` (from jvm_heap_probe) adds the JVM heap; without it only /proc is read.
    """

    def __init__(self, poll_seconds: float, heap_probe: Callable[[], tuple[int, int | None]] | None = None):
        self.poll_seconds = poll_seconds
        self.heap_probe = heap_probe
        self.peaks = Peaks()
        self._root = os.getpid()
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
        processes = list_processes()
        peaks.raise_to("python_driver_rss", rss_bytes(self._root))
        for jvm in (p for p in descendants(self._root, processes) if is_jvm(p)):
            peaks.raise_to("jvm_rss", rss_bytes(jvm.pid))
        workers = python_workers(self._root, processes)
        total = 0
        for worker in workers:
            peaks.raise_to("worker_max_rss", rss_bytes(worker.pid))
            total += pss_bytes(worker.pid) or 0
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

