"""The Python environment archive, built by the project's own script and cached by its inputs.

`deploy/build_env.sh --host` builds the archive the jobs unpack as ./environment (on AWS it runs in
Amazon Linux; here on this machine's Python 3.11, whose interpreter path the archive keeps). The
build takes minutes, so its result is kept under a name made of the hash of what decides its
content (the lock file, the build script, the interpreter's version and path), as `make setup`
keeps its stamps: a rerun with the same inputs reuses it, a change of any of them rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from pipelines.config import PROJECT_ROOT
from rehearsal.spark_cluster import end_process_group

BUILD_SCRIPT = PROJECT_ROOT / "deploy" / "build_env.sh"
LOCK_FILE = PROJECT_ROOT / "requirements.lock"
# Fast compression: the archive travels over loopback, and is rebuilt only when its inputs change.
COMPRESS_LEVEL = "1"


def base_interpreter() -> str:
    """The Python the project's venv was made from (the archive's venv is made from it too)."""
    return getattr(sys, "_base_executable", sys.executable)


def inputs_hash(interpreter: str) -> str:
    digest = hashlib.sha256()
    for path in (LOCK_FILE, BUILD_SCRIPT):
        digest.update(path.read_bytes())
    digest.update(f"{interpreter}|{sys.version}".encode())
    return digest.hexdigest()[:16]


class EnvironmentBuildError(RuntimeError):
    """build_env.sh failed; the message names its log."""


def cached_archive(cache_dir: Path, log_file: Path) -> tuple[Path, bool]:
    """The archive for the current inputs, built if absent; returns (path, built now).

    The build writes into a folder of its own (venv-pack reads the format from the name, so the
    name keeps .tar.gz) and the archive is moved into the cache only when complete.
    """
    interpreter = base_interpreter()
    archive = cache_dir / f"fruits-env-{inputs_hash(interpreter)}.tar.gz"
    if archive.is_file():
        return archive, False
    building = cache_dir / "building"
    building.mkdir(parents=True, exist_ok=True)
    partial = building / archive.name
    env = {**os.environ, "PYTHON": interpreter, "OUT": str(partial), "COMPRESS_LEVEL": COMPRESS_LEVEL}
    with open(log_file, "ab") as log:
        # Its own process group: interrupted, pip goes too and the script's clean-up trap runs.
        build = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT), "--host"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            build.wait()
        finally:
            end_process_group(build)
    if build.returncode != 0 or not partial.is_file():
        raise EnvironmentBuildError(f"deploy/build_env.sh --host failed (exit {build.returncode}); see {log_file}")
    partial.rename(archive)
    for stale in cache_dir.glob("fruits-env-*.tar.gz"):
        if stale != archive:
            stale.unlink()
    return archive, True


def unpack(archive: Path, target: Path) -> Path:
    """Unpack the archive into `target`, as Spark does in each container: nothing is rewritten.

    The venv's interpreter finds its packages relative to itself and its base Python through
    pyvenv.cfg, which is why the base must exist at the same path where the archive runs.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="tar")
    return target
