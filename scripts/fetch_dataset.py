"""Prepare the input folder for `make run`: link the local sample, else download Fruits-360.

Idempotent: an existing input.path is used as it is. The images are never copied into the
repository (work/ is git-ignored).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from pipelines.options import load_stage_conf, stage_parser
from pipelines.config import is_remote, resolve_location


def prepare_input(input_path: str, seed_path: str | None, download_url: str) -> str:
    if is_remote(input_path):
        return f"input {input_path} is remote: nothing to prepare"
    target = Path(input_path)
    if target.exists():
        return f"input {target} exists"
    target.parent.mkdir(parents=True, exist_ok=True)
    if seed_path and Path(resolve_location(seed_path)).is_dir():
        target.symlink_to(Path(resolve_location(seed_path)), target_is_directory=True)
        return f"input {target} -> {resolve_location(seed_path)} (local sample)"
    return download(download_url, target)


def download(url: str, target: Path) -> str:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "fruits-360.zip"
        print(f"downloading {url} (about 1 GB) ...", flush=True)
        with urllib.request.urlopen(url) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        roots = [p for p in Path(tmp).iterdir() if p.is_dir() and (p / "Training").is_dir()]
        if not roots:
            raise SystemExit(f"{url} has no Training/ folder at its top level: set input.download_url to a Fruits-360 archive")
        shutil.move(str(roots[0]), target)
        size = archive.stat().st_size
    return f"input {target} downloaded from {url} ({size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    conf = load_stage_conf(stage_parser(__doc__.splitlines()[0]).parse_args(argv))
    print(prepare_input(conf.path("input.path"), conf["input.seed_path"], conf["input.download_url"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
