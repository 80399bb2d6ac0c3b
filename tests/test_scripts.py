"""Smoke tests of the scripts behind make targets, run as the Makefile runs them.

- scripts/fetch_dataset.py, the first step of `make run` (and of `make test`): the input folder;
- scripts/fetch_weights.py (`make test`): the weights in the Keras cache;
- scripts/render_deck.py, `make deck`: the deck to HTML and PDF;
- scripts/run_s3_demo.py, `make run-s3`: the chain on the local S3 server.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from pipelines.features import WEIGHTS_FILE_NAME
from tests.conftest import copy_sample, jpeg_bytes, load_script


def script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- fetch_dataset.py


def fake_seed(root: Path) -> Path:
    image = root / "Training" / "Kiwi" / "0_100.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(jpeg_bytes())
    return root


def test_fetch_dataset_links_the_local_sample_then_leaves_the_input_as_it_is(tmp_path):
    seed, target = fake_seed(tmp_path / "seed"), tmp_path / "work" / "input"
    sets = ["--set", f"input.path={target}", "--set", f"input.seed_path={seed}"]

    first = script("scripts/fetch_dataset.py", "--conf", "conf/local.yaml", *sets)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"input {target} -> {seed} (local sample)"
    assert target.is_symlink() and target.resolve() == seed.resolve()
    assert (target / "Training" / "Kiwi" / "0_100.jpg").is_file()

    again = script("scripts/fetch_dataset.py", "--conf", "conf/local.yaml", *sets)
    # (conf resolves input.path, so the message names the folder the link points to)
    assert again.returncode == 0 and again.stdout.startswith("input ") and again.stdout.strip().endswith(" exists")
    assert target.is_symlink() and target.resolve() == seed.resolve()


def test_fetch_dataset_downloads_and_unpacks_the_archive_when_there_is_no_sample(tmp_path):
    archive = tmp_path / "fruits.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("fruits-360-main/Training/Kiwi/0_100.jpg", jpeg_bytes())
        zipped.writestr("fruits-360-main/Test/Kiwi/1_100.jpg", jpeg_bytes())
    target = tmp_path / "input"
    fetch = load_script("fetch_dataset")

    message = fetch.prepare_input(str(target), str(tmp_path / "no-sample"), archive.as_uri())

    assert message.startswith(f"input {target} downloaded from {archive.as_uri()}")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.jpg")) == ["Test/Kiwi/1_100.jpg", "Training/Kiwi/0_100.jpg"]


def test_fetch_dataset_refuses_an_archive_without_training_folder(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("something/else.txt", "x")
    with pytest.raises(SystemExit, match="no Training/ folder.*input.download_url"):
        load_script("fetch_dataset").prepare_input(str(tmp_path / "input"), None, archive.as_uri())
    assert not (tmp_path / "input").exists()


# ---------------------------------------------------------------- fetch_weights.py


def test_fetch_weights_copies_the_seed_into_the_cache_once(tmp_path, weights_seed):
    sets = ["--set", f"silver.keras_home={tmp_path / 'keras'}", "--set", f"silver.model_seed_dir={weights_seed}"]
    first = script("scripts/fetch_weights.py", "--conf", "conf/local.yaml", *sets)
    assert first.returncode == 0, first.stderr
    cached = tmp_path / "keras" / "models" / WEIGHTS_FILE_NAME
    assert cached.is_file() and "copied to the Keras cache" in first.stdout
    again = script("scripts/fetch_weights.py", "--conf", "conf/local.yaml", *sets)
    assert again.returncode == 0 and f"(Keras cache {cached})" in again.stdout


def test_fetch_weights_without_any_copy_offline_says_where_to_put_the_file(tmp_path):
    done = script(
        "scripts/fetch_weights.py", "--conf", "conf/local.yaml", "--set", f"silver.keras_home={tmp_path / 'keras'}",
        "--set", f"silver.model_seed_dir={tmp_path / 'none'}", "--set", "silver.download=false",
    )
    assert done.returncode == 2
    assert "silver.weights_file" in done.stderr and "download disabled" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- render_deck.py (make deck)


# The deck's render and its page checks: tests/deck/.


def test_render_deck_names_a_missing_source(tmp_path):
    done = script("scripts/render_deck.py", "--source", str(tmp_path / "none.md"), "--out-dir", str(tmp_path))
    assert done.returncode == 2 and "none.md does not exist" in done.stderr


# ---------------------------------------------------------------- run_s3_demo.py (make run-s3)


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.spark
@pytest.mark.s3
def test_make_run_s3_runs_the_chain_on_the_local_server_and_reads_the_tables_back(tmp_path, sample):
    from tests.s3_binary import server_binary_or_skip

    server_binary_or_skip()
    copy_sample(tmp_path / "input", 4)
    done = script(
        "-m", "scripts.run_s3_demo", "--source", str(tmp_path / "input"), "--through", "gold",
        *(a for s in ("spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=1g",
                      "silver.weights=random", f"silver.keras_home={tmp_path / 'keras'}")
          for a in ("--set", s)),
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "uploaded 4 images" in done.stdout
    for stage in ("bronze", "silver", "gold"):
        assert re.search(rf"\[s3a\] {stage} run \S+: ", done.stdout), done.stdout
    counts = dict(re.findall(r"s3a://\S+/(\w+): (\d+) rows", done.stdout))
    assert {t: int(counts[t]) for t in ("bronze", "silver", "gold")} == {"bronze": 4, "silver": 4, "gold": 4}
    assert re.search(r"chain on s3a for 4 images: [\d.]+ s", done.stdout)


def test_run_s3_names_a_missing_input_folder(tmp_path):
    done = script("-m", "scripts.run_s3_demo", "--source", str(tmp_path / "none"))
    assert done.returncode == 1
    assert f"input folder '{tmp_path / 'none'}' does not exist" in done.stderr and "Traceback" not in done.stderr
