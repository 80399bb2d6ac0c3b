"""Randomized check: random small sequences of input changes and crashes, each followed by a clean rerun.

A sequence starts from a few images, then each step applies one random operation to the input
folder (add new images, touch a file, rewrite one in place with other pixels, rename or move one,
delete one, copy one under a new name) and runs bronze, silver and gold through their own `main`
with their gates. In some steps one stage crashes at lake.write_audit_publish's fault point
(FRUITS_FAULT_AFTER_PUBLISH=quarantine:raise: after its quarantine commit, before its own table's)
and is rerun. After every step, and against a clean run on the final input at the end:

- no stuck gate: every stage exits 0 (after the rerun of a crashed one), and the last validation
  of every layer passed;
- counts reconcile: bronze = silver + silver's quarantine image by image, gold = silver, and no
  image_id appears twice in a layer, nor a path twice in bronze;
- nothing lost: every file of the input is accounted for, by its path and content in bronze, or by
  a quarantine row for its path (changed, touched, a duplicate of an ingested image, or rejected);
- the clean lake's images are in the sequenced lake, but for the new contents of files rewritten
  in place, which bronze records as changes and keeps the first version of (docs/bronze.md).

Size: FRUITS_RANDOMIZED_SEQUENCES sequences (default 1) of FRUITS_RANDOMIZED_STEPS steps (default 2),
seed FRUITS_RANDOMIZED_SEED (default: a new one, printed, so a failure can be replayed). The
default fits CI; `FRUITS_RANDOMIZED_STEPS=10 FRUITS_RANDOMIZED_SEQUENCES=2` is 10x that (README, reliability suite).
"""

from __future__ import annotations

import io
import os
import random
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines import lake, stages
from pipelines.config import load_conf
from pipelines.images import sha256_hex
from pipelines.layout import Layout
from quality import outcomes
from tests.reliability.inputs import distinct_jpeg

# Several chains of in-process stage runs per sequence: minutes, so `make test-long`, not `make test`.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.long]

SEQUENCES = int(os.environ.get("FRUITS_RANDOMIZED_SEQUENCES", "1"))
STEPS = int(os.environ.get("FRUITS_RANDOMIZED_STEPS", "2"))
SEED = int(os.environ.get("FRUITS_RANDOMIZED_SEED", str(random.SystemRandom().randrange(10**6))))
LABELS = ("Kiwi", "Pear", "Plum")
OPERATIONS = ("add", "touch", "rewrite", "rename", "move", "delete", "copy")
# The image layers (the stages through gold): the faults here are about images, runs and commits;
# the classifier, a model over gold, has its own tests (tests/classifier/).
STAGES = stages.through("gold")


@dataclass
class Sequence:
    """One input folder, one lake, and what happened to them."""

    root: Path
    rng: random.Random
    next_image: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def files(self) -> list[Path]:
        return sorted(p for p in self.input.rglob("*.jpg") if p.is_file())

    def new_image(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{self.next_image}.jpg"
        path.write_bytes(distinct_jpeg(self.next_image))
        self.next_image += 1
        return path

    def add(self, count: int) -> None:
        for _ in range(count):
            self.new_image(self.input / "Training" / self.rng.choice(LABELS))

    def apply(self, operation: str) -> str:
        """Apply one operation to the input and return what it did."""
        files = self.files()
        if operation == "add" or not files:
            count = self.rng.randint(1, 3)
            self.add(count)
            return f"add {count}"
        target = self.rng.choice(files)
        name = target.relative_to(self.input)
        if operation == "touch":
            stat = target.stat()
            os.utime(target, (stat.st_atime, stat.st_mtime + 60))
        elif operation == "rewrite":
            target.write_bytes(distinct_jpeg(self.next_image))
            self.next_image += 1
        elif operation == "rename":
            target.rename(target.with_name(f"renamed{self.next_image}.jpg"))
            self.next_image += 1
        elif operation == "move":
            other = self.input / "Training" / self.rng.choice([label for label in LABELS if label != target.parent.name])
            other.mkdir(parents=True, exist_ok=True)
            target.rename(other / f"moved{self.next_image}.jpg")
            self.next_image += 1
        elif operation == "delete":
            target.unlink()
        elif operation == "copy":
            shutil.copy2(target, target.with_name(f"copy{self.next_image}.jpg"))
            self.next_image += 1
        return f"{operation} {name}"


def run_stage(stage: str, lake_root: Path, input_root: Path, crash: bool = False) -> tuple[int | str, str]:
    """The stage's own main in this process; 'crashed' when the fault point fired."""
    sets = [
        f"lake.root={lake_root}", f"input.path={input_root}", "spark.master=local[2]", "spark.shuffle_partitions=2",
        "silver.weights=random", f"silver.keras_home={lake_root.parent / 'keras'}", "silver.download=false",
    ]
    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.pop(lake.FAULT_AFTER_PUBLISH_ENV, None)
    if crash:
        os.environ[lake.FAULT_AFTER_PUBLISH_ENV] = "quarantine:raise"
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code: int | str = import_module(f"pipelines.{stage}").main(
                ["--conf", "conf/local.yaml", *(a for s in sets for a in ("--set", s))]
            )
    except lake.InjectedFault:
        code = "crashed"
    finally:
        os.environ.pop(lake.FAULT_AFTER_PUBLISH_ENV, None)
        if previous is not None:
            os.environ[lake.FAULT_AFTER_PUBLISH_ENV] = previous
    return code, out.getvalue() + err.getvalue()


def run_chain(sequence: Sequence, crash_stage: str | None = None) -> None:
    for stage in STAGES:
        code, output = run_stage(stage, sequence.lake, sequence.input, crash=stage == crash_stage)
        if code == "crashed":
            sequence.log.append(f"  {stage} crashed between its publishes; rerun")
            code, output = run_stage(stage, sequence.lake, sequence.input)
        elif stage == crash_stage:
            sequence.log.append(f"  {stage} asked to crash, but had nothing to publish")
        assert code == 0, f"{stage} exited {code} (seed {SEED}):\n" + "\n".join(sequence.log) + f"\n{output}"


# ---------------------------------------------------------------- invariants


def tables(spark, lake_root: Path) -> dict:
    conf = load_conf(["conf/local.yaml"], [f"lake.root={lake_root}"])

    def read(table):
        frame = Layout.from_conf(conf).read(spark, table)
        return [] if frame is None else frame.drop("content", "features", "pca").collect()

    return {"conf": conf, **{name: read(name) for name in ("bronze", "silver", "gold", "quarantine")}}


def check_lake(spark, sequence: Sequence) -> dict:
    """The invariants of the module docstring that hold after every step; returns the tables read."""
    lake_tables = tables(spark, sequence.lake)
    context = f"(seed {SEED})\n" + "\n".join(sequence.log)
    bronze, silver, gold, quarantine = (lake_tables[t] for t in ("bronze", "silver", "gold", "quarantine"))
    for name, rows in (("bronze", bronze), ("silver", silver), ("gold", gold)):
        ids = [r["image_id"] for r in rows]
        assert len(ids) == len(set(ids)), f"{name} holds an image_id twice {context}"
    assert len({r["path"] for r in bronze}) == len(bronze), f"bronze holds a path twice {context}"
    silver_quarantined = {r["image_id"] for r in quarantine if r["stage"] == "silver"}
    assert {r["image_id"] for r in bronze} == {r["image_id"] for r in silver} | silver_quarantined, f"bronze != silver + quarantine {context}"
    assert {r["image_id"] for r in gold} == {r["image_id"] for r in silver}, f"gold != silver {context}"
    last = outcomes.latest(spark, lake_tables["conf"])
    assert all(last[layer].success for layer in STAGES), f"a gate is left failed {context}"

    ingested = {(r["path"], r["image_id"]) for r in bronze}
    recorded_paths = {r["path"] for r in quarantine if r["stage"] == "bronze"}
    for file in sequence.files():
        path = file.relative_to(sequence.input).as_posix()
        content = sha256_hex(file.read_bytes())  # these synthetic JPEGs carry no metadata to scrub
        assert (path, content) in ingested or path in recorded_paths, f"{path} is neither in bronze nor quarantined {context}"
    return lake_tables


@pytest.mark.parametrize("number", range(SEQUENCES))
def test_random_sequences_end_like_a_clean_run(spark, tmp_path, number):
    sequence = Sequence(tmp_path / "sequence", random.Random(SEED + number))
    print(f"randomized sequence {number}: seed {SEED + number}, {STEPS} steps")
    sequence.add(6)
    sequence.log.append("start with 6 images")
    run_chain(sequence)
    check_lake(spark, sequence)
    for _ in range(STEPS):
        operation = sequence.rng.choice(OPERATIONS)
        sequence.log.append(sequence.apply(operation))
        crash_stage = sequence.rng.choice([*STAGES, None, None])
        run_chain(sequence, crash_stage)
        check_lake(spark, sequence)
    print("\n".join(sequence.log))

    clean_root = tmp_path / "clean"
    shutil.copytree(sequence.input, clean_root / "input")
    clean = Sequence(clean_root, random.Random(0))
    run_chain(clean)
    clean_tables = check_lake(spark, clean)
    final = check_lake(spark, sequence)
    changed = {r["path"] for r in final["quarantine"] if r["stage"] == "bronze" and r["reason"].startswith("changed_since_ingest")}
    clean_ids = {r["image_id"] for r in clean_tables["bronze"] if r["path"] not in changed}
    assert clean_ids <= {r["image_id"] for r in final["bronze"]}, "\n".join(sequence.log)
    assert {r["image_id"] for r in clean_tables["bronze"]} <= {r["image_id"] for r in final["bronze"]} | {
        sha256_hex((sequence.input / path).read_bytes()) for path in changed if (sequence.input / path).exists()
    }
