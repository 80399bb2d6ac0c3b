"""A lake built by the real chain (bronze -> silver -> gold, random-weights model) on a few small
JPEGs, one of them uploaded twice (bronze quarantines the copy as a duplicate of the same image):
the erasure and maintenance tests start from it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import lake
from pipelines.layout import Layout
from tests.quality.test_stage_commands import Lake, write_good_input

# The duplicate upload of the first image sits at this path; bronze quarantines it (same image_id).
DUPLICATE = "Training/Fruit 0/copy_of_0.jpg"
# Bronze quarantines 1 of 5 files: above the default rate, which guards real uploads.
TOLERANT = ("quality.bronze.max_quarantine_rate=0.5",)


@dataclass
class ChainLake:
    lake: Lake
    input: Path

    def args(self, run_id: str, *sets: str) -> list[str]:
        return self.lake.args(run_id, f"input.path={self.input}", *TOLERANT, *sets)


def build_chain_lake(root: Path) -> ChainLake:
    source = write_good_input(root / "input")
    shutil.copy2(source / "Training" / "Fruit 0" / "0_100.jpg", source / DUPLICATE)
    chain = ChainLake(Lake(root), source)
    for stage in ("bronze", "silver", "gold"):
        step = chain.lake.run(stage, f"{stage}-1", f"input.path={source}", *TOLERANT)
        assert step.code == 0, step.err
    return chain


def image_rows(spark, chain: ChainLake, table: str) -> list:
    frame = Layout.from_conf(chain.lake.conf).read(spark, table)
    return [] if frame is None else frame.collect()


@pytest.fixture(scope="package")
def chain_lake(spark, tmp_path_factory) -> ChainLake:
    return build_chain_lake(tmp_path_factory.mktemp("operations"))
