"""deploy/entry.py: runs a stage from the --py-files archive with conf/ readable as files."""

from __future__ import annotations

import sys
import zipfile

import pytest

from deploy import entry


def _archive(path, stage_body: str):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pipelines/__init__.py", "")
        archive.writestr("pipelines/config.py", "from pathlib import Path\nROOT = Path(__file__).resolve().parent.parent\n")
        archive.writestr("pipelines/fakestage.py", stage_body)
        archive.writestr("conf/aws.yaml", "answer: 42\n")


def test_runs_the_stage_with_its_arguments_and_conf_on_disk(tmp_path, monkeypatch):
    code = tmp_path / "fruits-code.zip"
    out = tmp_path / "out.txt"
    _archive(
        code,
        "import sys\nfrom pipelines.config import ROOT\n"
        "if __name__ == '__main__':\n"
        f"    open({str(out)!r}, 'w').write(' '.join(sys.argv[1:]) + '|' + (ROOT / sys.argv[2]).read_text())\n",
    )
    monkeypatch.setattr(sys, "path", [str(tmp_path / "other.zip"), str(code), *sys.path])
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for name in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
        monkeypatch.delitem(sys.modules, name)
    entry.main(["fakestage", "--conf", "conf/aws.yaml"])
    assert out.read_text() == "--conf conf/aws.yaml|answer: 42\n"


def test_without_the_archive_it_says_what_to_pass(tmp_path):
    with pytest.raises(SystemExit, match="--py-files"):
        entry.find_archive([str(tmp_path / "nothing.zip")])


def test_stage_is_required():
    with pytest.raises(SystemExit, match="usage"):
        entry.main(["--conf", "conf/aws.yaml"])
