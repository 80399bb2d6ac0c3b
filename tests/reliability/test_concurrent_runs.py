"""Two runs of the same stage at once, on the same lake and the same new input.

Both are `python -m pipelines.<stage>` processes (two drivers, two JVMs) started together. Each must
end with exit code 0, or fail with a message saying what happened and what to do (never a bare
stack trace); the lake must end equal to a clean run's: no duplicate, nothing missing.

- bronze (lake.publish): both stage the same 40 images; Delta's optimistic concurrency lets one
  MERGE commit first, the other's commit conflicts and its insert-if-absent MERGE is retried
  against the new version, inserting nothing twice. The counts each run reports are what its own
  MERGE inserted, so together they add up to the input exactly once.
- gold (first fit, lake.write_audit_publish replacing gold): both fit a PCA and overwrite gold; whatever the
  interleaving, gold must hold one model version over every silver row.
See docs/reliability.md.
"""

from __future__ import annotations

import re

import pytest

from tests.reliability.conftest import assert_bronze_equal, assert_gold_equal, copy_tables

pytestmark = [pytest.mark.spark]

BRONZE_SUMMARY = re.compile(r"bronze run (\S+): .* new rows (\d+), already present (\d+), rejected (\d+)")


def start_pair(stage_processes, stage, scenario, log_dir):
    return [stage_processes(stage, scenario.args(f"concurrent-{n}"), log_dir, f"{stage}-concurrent-{n}") for n in "ab"]


def assert_each_succeeded_or_failed_clearly(runs) -> list:
    """The runs that succeeded; a failed one must say that another run got there first and to rerun
    (lake.ConcurrentWriteError's message), not only show a Java exception."""
    codes = [run.finish() for run in runs]
    assert any(code == 0 for code in codes), "\n".join(run.tail() for run in runs)
    for run, code in zip(runs, codes):
        if code != 0:
            explained = any("another run" in line and "rerun" in line for line in run.errors().splitlines())
            assert explained, f"{run.name} failed (exit {code}) without a clear message:\n{run.tail()}"
    return [run for run, code in zip(runs, codes) if code == 0]


@pytest.mark.slow
@pytest.mark.long  # two bronze processes and the clean reference: ~2.5 min (make test-long)
def test_two_bronze_runs_at_once_insert_each_image_once(spark, reference, tmp_path, stage_processes):
    scenario = reference.conf.elsewhere(tmp_path / "lake")

    runs = start_pair(stage_processes, "bronze", scenario, tmp_path / "logs")
    succeeded = assert_each_succeeded_or_failed_clearly(runs)

    summaries = [BRONZE_SUMMARY.search(run.output()) for run in succeeded]
    assert all(summaries), "\n".join(run.tail() for run in succeeded)
    assert sum(int(s.group(2)) for s in summaries) == reference.input.images
    assert sum(int(s.group(4)) for s in summaries) == reference.input.rejected
    assert_bronze_equal(spark, scenario.conf, reference.conf.conf)


@pytest.mark.slow
@pytest.mark.long  # two gold processes fitting at once: minutes (make test-long)
def test_two_gold_fits_at_once_leave_one_consistent_model(spark, reference, tmp_path, stage_processes):
    scenario = reference.conf.elsewhere(tmp_path / "lake")
    copy_tables(reference.conf, scenario, ["bronze", "quarantine", "silver"])

    runs = start_pair(stage_processes, "gold", scenario, tmp_path / "logs")
    assert_each_succeeded_or_failed_clearly(runs)

    assert_gold_equal(spark, scenario.conf, reference.conf.conf)
