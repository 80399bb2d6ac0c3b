"""The machine a bench ran on, recorded with its results: figures mean nothing without it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

PACKAGES = ("pyspark", "delta-spark", "tensorflow-cpu", "ai-edge-litert", "keras", "pillow", "numpy", "pandas", "pyarrow")


def cpu_model(cpuinfo: str) -> str | None:
    """The first `model name` of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def mem_total_bytes(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def java_version() -> str | None:
    """First line of `java -version` for the java Spark uses ($JAVA_HOME/bin/java, else the PATH's)."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine() -> dict:
    """Cores, RAM, CPU model, OS, load at the time of the call, and the versions that matter."""
    ram = mem_total_bytes(_read("/proc/meminfo"))
    return {
        "cpu_model": cpu_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(ram / 1024**3, 1) if ram else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java_version(),
        "packages": package_versions(),
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
    }
