"""The bench's images: a fixed selection of the Fruits-360 sample, copied into input folders.

The sample's images are put in one shuffled order (seeded by `bench.seed`, so every bench run and
every machine uses the same images), and each input takes a prefix of that order: N images for
the throughput runs, the next 5 % as the increment, 4N for the memory run, and as many images
again after those 4N as the increment of the 4N lake. Prefixes of a shuffle
spread every size over all the labels. Images are copied (a few MB), never linked: Spark lists
files with their size and modification time, and a symlink would give the link's.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class BenchDataError(ValueError):
    """The sample cannot provide the images the bench asks for; the message says what to change."""


def list_images(source: Path, extensions: Sequence[str]) -> list[str]:
    """Relative paths (posix) of the image files under `source`, sorted."""
    wanted = {e.lower() for e in extensions}
    return sorted(
        p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if p.is_file() and p.suffix.lstrip(".").lower() in wanted
    )


def bench_order(paths: Sequence[str], seed: int) -> list[str]:
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    return order


@dataclass(frozen=True)
class Selection:
    """The relative paths of each input: `base` (N), `increment` (after base), `memory` (4N),
    `memory_increment` (as many as `increment`, after the 4N), and `warm_increments`: two more of
    that size after `increment`, added one after the other in one application (bench.measure's
    chain_warm)."""

    base: list[str]
    increment: list[str]
    memory: list[str]
    memory_increment: list[str]
    warm_increments: tuple[list[str], list[str]] = ([], [])


def select(order: Sequence[str], images: int, incremental_fraction: float, memory_factor: int) -> Selection:
    increment = max(1, round(images * incremental_fraction))
    needed = max(images + 3 * increment, images * memory_factor + increment)
    if images < 2:
        raise BenchDataError(f"bench.images={images}: the bench needs at least 2 images (gold fits a PCA)")
    if len(order) < needed:
        raise BenchDataError(
            f"the sample holds {len(order)} images but the bench needs {needed} "
            f"(bench.images={images} x bench.memory_factor={memory_factor}, plus "
            f"bench.incremental_fraction={incremental_fraction}): lower --images or point input.seed_path "
            f"at a larger copy of Fruits-360"
        )
    return Selection(
        base=list(order[:images]),
        increment=list(order[images : images + increment]),
        memory=list(order[: images * memory_factor]),
        memory_increment=list(order[images * memory_factor : images * memory_factor + increment]),
        warm_increments=(
            list(order[images + increment : images + 2 * increment]), list(order[images + 2 * increment : images + 3 * increment]),
        ),
    )


def materialize(source: Path, rel_paths: Sequence[str], dest: Path) -> Path:
    """Copy the files (keeping <split>/<label>/<file>, times included) under `dest`; returns `dest`."""
    for rel in rel_paths:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest
