"""The stage registry (pipelines/stages.py): the one declaration of the chain's order and checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines import stages
from pipelines.config import PROJECT_ROOT


def test_the_chain_runs_each_stage_after_the_layer_it_reads():
    assert stages.names() == ("bronze", "silver", "gold", "classifier")
    seen = set()
    for stage in stages.STAGES:
        assert stage.upstream is None or stage.upstream in seen
        seen.add(stage.name)


def test_an_unknown_stage_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown layer 'platinum': quality gates exist for bronze, silver, gold, classifier"):
        stages.get("platinum")


@pytest.mark.parametrize(
    "jobs, problem",
    [
        (["bronze", "silver", "gold", "catalog"], None),
        (["bronze", "silver", "gold"], None),
        (["silver", "bronze", "gold"], "not in the chain's order"),
        (["bronze", "catalog", "silver"], "not in the chain's order"),
        (["bronze", "bronze"], "repeat"),
        (["bronze", "platinum"], "unknown stage 'platinum'"),
    ],
)
def test_a_deployment_step_list_is_checked_against_the_registry(jobs, problem):
    found = stages.order_problem(jobs)
    assert (found is None) if problem is None else (problem in found)


def test_the_makefile_reads_the_order_from_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stages", "--names"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == list(stages.names())
    assert "pyspark" not in subprocess.run(
        [sys.executable, "-c", "import sys, pipelines.stages; print(sorted(sys.modules))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout
