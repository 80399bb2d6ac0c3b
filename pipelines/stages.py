"""The stage registry: each stage of the chain declared once, in the order the chain runs.

A declaration says what the rest of the project needs to know about a stage: its name (also its
module `pipelines.<name>` and its lake table `lake.tables.<name>`), the layer it reads, the key of
its rows, and what its quality gate checks (`Suite`, read by quality/suites.py and quality/gates.py).
The chain runner (`pipelines/run.py`, `make run`), the benchmarks, the S3 demo, the deploy step
list (checked against it), the reliability tests and the notebook take the order from here, and
the gates take the upstream layer and the checks: adding a stage is one `Stage(...)` here plus its
module (docs/architecture.md, "How to add a stage").

Kept free of Spark and other heavy imports: the Makefile and the deploy tool read it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

# Every layer's rows are identified by this column; the gates report unexpected rows by it.
ROW_ID = "image_id"


@dataclass(frozen=True)
class Column:
    """A scalar column of the layer's rows the rows suite checks: not null, and unique when said so.

    `positive`: the column is a number that must be above 0 (the text says why, in the suite's notes).
    """

    name: str
    unique: bool = False
    positive: str | None = None


@dataclass(frozen=True)
class Array:
    """An array column the rows suite checks element-wise (length, null/NaN/infinite values, bounds).

    `length` names a conf key; None on a versioned suite: the model's own length (ModelFacts:
    gold's k, the classifier's number of labels). `low` and `high` are numbers, or conf keys.
    `note` is formatted with `length` and `version` (the model version, versioned suites only).
    """

    name: str
    note: str
    length: str | None = None
    low: str | float | None = None
    high: str | float | None = None


@dataclass(frozen=True)
class Suite:
    """What the gate checks on a batch besides the row id (not null, unique) and the totals every
    layer has (quarantine rate, rows once published, reconciliation with the upstream layer).

    `versioned`: the rows carry `model_version` and the layer holds one model version at a time
    (a fit replaces the table). The gate then asks the stage's `facts` about the batch's model
    (ModelFacts: the array's length and the model's own checks, e.g. gold's variance reached or the
    classifier's Test accuracy) and checks one version per batch.
    """

    columns: tuple[Column, ...] = ()
    array: Array | None = None
    versioned: bool = False


@dataclass(frozen=True)
class ModelCheck:
    """One number about a batch's model that the totals suite bounds: `metric` becomes a column of
    the totals row, expected not null, not NaN and within [low, high] (None: unbounded). `note` says
    why, in the suite's Data Docs."""

    metric: str
    value: float | int | None
    low: float | None
    high: float | None
    note: str


@dataclass(frozen=True)
class ModelFacts:
    """What a versioned stage says about the model of a batch, for its gate.

    `array_length`: the values every row's declared array must hold (gold: k; the classifier: its
    labels), None when unknown (the model's records are missing, which a check then fails).
    """

    model_version: str | None
    array_length: int | None
    checks: tuple[ModelCheck, ...] = ()


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: str | None
    keys: tuple[str, ...]
    suite: Suite
    # The lake tables (names in conf lake.tables) whose rows decide what the stage does, its own
    # included: when none has a new commit since its last complete run (and the conf and, without
    # an upstream stage, the input folder are the same), the stage does nothing (pipelines/marks.py).
    reads: tuple[str, ...] = ()
    # "module:function" returning ModelFacts(spark, conf, staged), for a versioned suite; `staged`
    # is the lake.Staged of the run: the batch and every table staged beside it.
    facts: str | None = None

    @property
    def module_name(self) -> str:
        return f"pipelines.{self.name}"

    def module(self) -> ModuleType:
        """The stage's module (imported on demand: it brings Spark, TensorFlow or Spark ML)."""
        return importlib.import_module(self.module_name)

    def model_facts(self, spark, conf, staged) -> ModelFacts:
        module, _, function = self.facts.partition(":")
        return getattr(importlib.import_module(module), function)(spark, conf, staged)


STAGES: tuple[Stage, ...] = (
    Stage(
        "bronze",
        upstream=None,
        keys=(ROW_ID,),
        reads=("bronze", "quarantine"),
        suite=Suite(
            columns=(
                Column("path", unique=True),
                Column("label"),
                Column("size_bytes", positive="Bytes of the stored image: an empty image is corrupt."),
            )
        ),
    ),
    Stage(
        "silver",
        upstream="bronze",
        keys=(ROW_ID,),
        reads=("bronze", "silver", "quarantine"),
        suite=Suite(
            array=Array(
                "features", "MobileNetV2 pooled features: {length} values, each an average of ReLU6 outputs",
                length="quality.silver.feature_length", low="quality.silver.feature_min", high="quality.silver.feature_max",
            )
        ),
    ),
    Stage(
        "gold",
        upstream="silver",
        keys=(ROW_ID,),
        # bronze: the exports carry each image's path; gold's model registry is not read here: a fit
        # always commits gold (and its variance rows) too.
        reads=("bronze", "silver", "gold", "gold_variance", "quarantine"),
        suite=Suite(
            columns=(Column("model_version"),),
            array=Array("pca", "k={length} principal components of model {version}"),
            versioned=True,
        ),
        facts="pipelines.gold:quality_facts",
    ),
    Stage(
        "classifier",
        upstream="gold",
        keys=(ROW_ID,),
        reads=("gold", "classifier", "classifier_metrics"),
        suite=Suite(
            columns=(Column("model_version"), Column("prediction")),
            array=Array("probabilities", "probability of each of the {length} labels of model {version}", low=0.0, high=1.0),
            versioned=True,
        ),
        facts="pipelines.classifier:quality_facts",
    ),
)
# Jobs a deployment may run after the chain (pipelines.<name>): they read the lake, they own no layer.
AFTER_CHAIN = ("catalog",)

_BY_NAME = {stage.name: stage for stage in STAGES}


def names() -> tuple[str, ...]:
    return tuple(stage.name for stage in STAGES)


def through(name: str) -> tuple[str, ...]:
    """The declared stages up to and including `name`, in run order (e.g. the image layers, through gold)."""
    known = names()
    get(name)
    return known[: known.index(name) + 1]


def get(name: str) -> Stage:
    """The declaration of `name`; ValueError naming the known stages for any other name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown layer '{name}': quality gates exist for {', '.join(names())}") from None


def order_problem(jobs: list[str]) -> str | None:
    """Why a list of jobs to run in turn (conf aws.stages) disagrees with the registry, or None.

    Every job must be a declared stage or one of AFTER_CHAIN, each stage after its upstream stage,
    and the AFTER_CHAIN jobs after every stage listed.
    """
    known = [*names(), *AFTER_CHAIN]
    for job in jobs:
        if job not in known:
            return f"unknown stage '{job}' (known: {', '.join(known)})"
    positions = [known.index(job) for job in jobs]
    if positions != sorted(positions) or len(set(jobs)) != len(jobs):
        return f"stages {', '.join(jobs)} are not in the chain's order ({', '.join(known)}), or repeat one"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The declared stages of the chain.")
    parser.add_argument("--names", action="store_true", help="print the stage names in run order, one per line")
    args = parser.parse_args(argv)
    if args.names:
        print("\n".join(names()))
        return 0
    for stage in STAGES:
        print(f"{stage.name}: reads {stage.upstream or 'the input folder'}, keys {', '.join(stage.keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
