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


HOSTILE_NAMES = [
    "kiwi:2024-01-01T10:00.jpg", "hash#1.jpg", "pct%41.jpg", "pct%zz.jpg", "q?mark.jpg", "star*.jpg",
    "ünïcødé 苹果.jpg", "new\nline.jpg", "-leading-dash.jpg", "br[ack]et.jpg", "cur{ly}.jpg", "back\\slash.jpg",
    "sp ace .jpg", "L" * 200 + ".jpg",
]
HOSTILE_LABELS = ["Kiwi", "Ban#ana %20 ?", "Fig:Dried"]


def write_hostile_names(root: Path) -> list[str]:
    """Every hostile name in a plain label folder, plus one image in each hostile label folder."""
    written = [f"Training/Kiwi/{p.name}" for p in write_images(root, "Kiwi", HOSTILE_NAMES, 0)]
    for n, label in enumerate(HOSTILE_LABELS[1:]):
        written += [f"Training/{label}/{p.name}" for p in write_images(root, label, [f"img{n}.jpg"], 50 + n)]
    return written
