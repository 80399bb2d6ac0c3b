"""spark-submit entry point on EMR: runs one stage from the code archive given to --py-files.

As the deploy tool submits it:

    spark-submit --py-files s3://BUCKET/code/fruits-code.zip s3://BUCKET/code/entry.py bronze --conf conf/aws.yaml

Why not submit pipelines/bronze.py itself: the stages read conf/base.yaml from the file system
(pipelines/config.py), and a file inside a zip cannot be opened that way. This script unpacks the
archive on the driver and runs the stage from there, so conf/ is a real folder; executors import
the same modules straight from the zip, as --py-files intends. Standard library only: it runs
before anything of ours is importable.
"""

from __future__ import annotations

import runpy
import sys
import tempfile
import zipfile
from pathlib import Path

MARKER = "pipelines/config.py"


def find_archive(paths: list[str]) -> Path:
    """The --py-files archive holding our code, among the entries of sys.path."""
    for entry in paths:
        if entry.endswith(".zip") and zipfile.is_zipfile(entry):
            with zipfile.ZipFile(entry) as archive:
                if MARKER in archive.namelist():
                    return Path(entry)
    raise SystemExit(f"entry.py: no archive holding {MARKER} on sys.path; pass the code archive with --py-files")


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: entry.py STAGE [--conf FILE ...] [--set KEY=VALUE ...]")
    stage, options = argv[0], argv[1:]
    root = Path(tempfile.mkdtemp(prefix="fruits-code-"))
    with zipfile.ZipFile(find_archive(sys.path)) as archive:
        archive.extractall(root)
    sys.path.insert(0, str(root))
    sys.argv = [str(root / "pipelines" / f"{stage}.py"), *options]
    runpy.run_module(f"pipelines.{stage}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
