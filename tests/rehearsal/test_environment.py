"""The environment archive: what build_env.sh leaves out, and the cache key of the rehearsal's copy."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import sys
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from rehearsal import environment

# What the EMR release puts on every job's PYTHONPATH itself (Spark's pyspark.zip and py4j).
PROVIDED_BY_EMR = {"pyspark", "py4j"}


def excluded_pattern() -> re.Pattern:
    script = (PROJECT_ROOT / "deploy" / "build_env.sh").read_text()
    match = re.search(r"^EXCLUDE='([^']+)'", script, re.MULTILINE)
    assert match, "deploy/build_env.sh no longer sets EXCLUDE='...'"
    return re.compile(match.group(1), re.IGNORECASE)


def imported_top_modules(folders: list[str]) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_the_archive_keeps_every_distribution_the_jobs_import():
    """delta-spark was left out while pipelines/lake.py imports delta.tables: the job failed on EMR."""
    pattern = excluded_pattern()
    owners = importlib.metadata.packages_distributions()
    lock = {line.split("==")[0].lower() for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    dropped = {}
    for module in imported_top_modules(["pipelines", "quality"]) - set(sys.stdlib_module_names):
        for dist in owners.get(module, []):
            if dist.lower() in lock and pattern.match(f"{dist}==") and dist.lower() not in PROVIDED_BY_EMR:
                dropped[module] = dist
    assert not dropped, f"build_env.sh excludes distributions the jobs import: {dropped}"


def test_the_cache_key_follows_the_lock_file_and_the_build_script(tmp_path, monkeypatch):
    lock, script = tmp_path / "requirements.lock", tmp_path / "build_env.sh"
    lock.write_text("numpy==2.2.6\n")
    script.write_text("echo build\n")
    monkeypatch.setattr(environment, "LOCK_FILE", lock)
    monkeypatch.setattr(environment, "BUILD_SCRIPT", script)
    first = environment.inputs_hash("/usr/bin/python3.11")
    assert environment.inputs_hash("/usr/bin/python3.11") == first
    assert environment.inputs_hash("/opt/python3.11") != first
    lock.write_text("numpy==2.2.7\n")
    assert environment.inputs_hash("/usr/bin/python3.11") != first


class FakeBuild:
    """Stands for `bash build_env.sh --host` started with Popen: writes OUT (or not) and exits."""

    def __init__(self, returncode: int, seen: dict):
        self.returncode, self.seen = returncode, seen

    def __call__(self, command, cwd, env, stdout, stderr, start_new_session):
        out = Path(env["OUT"])
        self.seen["out"] = out
        if self.returncode == 0:
            out.write_bytes(b"archive")
        self.pid = os.getpid()
        return self

    def wait(self, timeout=None):
        return self.returncode

    def poll(self):
        return self.returncode


def test_a_cached_archive_is_reused_without_building(tmp_path, monkeypatch):
    cached = tmp_path / f"fruits-env-{environment.inputs_hash(environment.base_interpreter())}.tar.gz"
    cached.write_bytes(b"archive")
    monkeypatch.setattr(environment.subprocess, "Popen", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    assert environment.cached_archive(tmp_path, tmp_path / "log") == (cached, False)


def test_a_build_writes_the_archive_under_its_final_name_then_moves_it(tmp_path, monkeypatch):
    """venv-pack reads the format from the file name: the build's output must end in .tar.gz."""
    seen: dict = {}
    monkeypatch.setattr(environment.subprocess, "Popen", FakeBuild(0, seen))
    monkeypatch.setattr(environment, "end_process_group", lambda process: None)
    archive, built = environment.cached_archive(tmp_path, tmp_path / "log")
    assert seen["out"].name.endswith(".tar.gz") and seen["out"].parent != tmp_path
    assert built and archive.read_bytes() == b"archive" and archive.parent == tmp_path and not seen["out"].exists()


def test_a_failed_build_names_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(environment.subprocess, "Popen", FakeBuild(1, {}))
    monkeypatch.setattr(environment, "end_process_group", lambda process: None)
    with pytest.raises(environment.EnvironmentBuildError, match=r"failed \(exit 1\); see .*build.log"):
        environment.cached_archive(tmp_path, tmp_path / "build.log")
