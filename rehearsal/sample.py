"""A small input set drawn from the local sample, spread across the label folders, names kept.

Used by `make run-s3` (--limit) and `make rehearse` (--images) to run the chain on a few dozen
images in minutes; the folder layout (`Training/<Label>/...`, spaces included) is kept, because the
label and the split come from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def image_files(source: Path, extensions: list[str]) -> list[Path]:
    suffixes = {f".{e.lower()}" for e in extensions}
    return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def spread(files: list[Path], limit: int) -> list[Path]:
    """`limit` files taken at even steps through the sorted list: spread across the label folders
    (each one sampled only when `limit` is at least the number of folders)."""
    if limit <= 0 or limit >= len(files):
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


def copy_subset(files: list[Path], source: Path, target: Path) -> None:
    for path in files:
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
