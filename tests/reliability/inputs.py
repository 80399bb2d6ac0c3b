"""Small synthetic inputs for the reliability tests: distinct JPEGs in <split>/<label>/ folders."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import jpeg_bytes


def distinct_jpeg(n: int) -> bytes:
    """A small JPEG whose pixels differ for every n (no metadata: its bytes are what bronze stores)."""
    return jpeg_bytes(size=(40 + n % 13, 30 + n // 13), color=((37 * n) % 256, (91 * n) % 256, 120))


def write_images(root: Path, label: str, names: list[str], first: int, split: str = "Training") -> list[Path]:
    """distinct_jpeg(first), distinct_jpeg(first + 1), ... under root/<split>/<label>/<name>."""
    folder = root / split / label
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset, name in enumerate(names):
        (folder / name).write_bytes(distinct_jpeg(first + offset))
        paths.append(folder / name)
    return paths
