"""The walkthrough notebook, executed top to bottom with nbclient on ~100 sample images, as CI does.

The kernel is this virtualenv's Python, declared by a kernelspec in a temporary Jupyter path (no
kernel is installed for the user). The notebook's own cells assert the chain's counts (every image
of the subset reaches gold, the damaged file is quarantined, the blocking gate publishes nothing);
this test checks that every cell ran without error and that the lake and the SQL results are there.
"""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from pipelines.config import PROJECT_ROOT, load_conf

NOTEBOOK = PROJECT_ROOT / "notebooks" / "fruits_walkthrough.ipynb"
KERNEL = "fruits-test-venv"

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def text_outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_walkthrough_notebook_runs_top_to_bottom_on_100_images(sample, tmp_path, monkeypatch):
    kernel_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(
        json.dumps(
            {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "Fruits venv (tests)", "language": "python"}
        )
    )
    work = tmp_path / "work"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FRUITS_CONF", "conf/local.yaml")
    monkeypatch.setenv("FRUITS_INPUT", str(sample))
    monkeypatch.setenv("FRUITS_NOTEBOOK_IMAGES", "100")
    monkeypatch.setenv("FRUITS_NOTEBOOK_WORK", str(work))
    monkeypatch.setenv("FRUITS_SET", "spark.master=local[2] spark.shuffle_partitions=2 spark.driver_memory=2g")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook, timeout=1800, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    nbformat.write(notebook, tmp_path / "executed.ipynb")  # kept in pytest's tmp folder for a look

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    assert not [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    printed = "\n".join(text_outputs(c) for c in code_cells)
    assert "bronze quality gate passed" in printed
    assert "silver quality gate passed" in printed
    assert "gold quality gate passed" in printed
    assert "bronze quality gate failed" in printed  # the last section's blocked batch
    assert "catalog fruits_notebook (persistent metastore): created bronze, silver, gold, gold_variance, quarantine" in printed
    assert (work / "metastore" / "metastore_db").is_dir()
    lake_conf = load_conf(["conf/local.yaml"], [f"lake.root={work / 'lake'}"])
    for table in ("bronze", "silver", "gold", "gold_variance", "quarantine"):
        assert (work / "lake" / lake_conf[f"lake.tables.{table}"] / "_delta_log").is_dir(), table
    assert (work / "lake" / lake_conf["lake.reports"] / lake_conf["quality.reports_dir"] / "gx").is_dir()
