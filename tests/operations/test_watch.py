"""Watch mode (`python -m pipelines.run --watch FOLDER`, pipelines/watch.py).

The settling rule is checked in-process with a stand-in for the chain (no Spark): a burst of files
makes one run, a later file another, nothing changes nothing. Then a real process: photos dropped
into the watched folder land in bronze, silver and gold, and TERM stops it cleanly (exit 0).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines import watch
from pipelines.config import PROJECT_ROOT, load_conf
from pipelines.layout import Layout
from tests.quality.test_stage_commands import GOOD_IMAGES, write_good_input


def _conf(folder: Path, tmp_path: Path):
    return load_conf(["conf/local.yaml"], [f"input.path={folder}", f"lake.root={tmp_path / 'lake'}",
                                           "watch.settle_seconds=0.4", "watch.poll_seconds=0.05"])


def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_burst_makes_one_run_and_a_later_photo_another(tmp_path):
    folder = tmp_path / "input" / "Training" / "Kiwi"
    folder.mkdir(parents=True)
    runs: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: runs.append(watch.watch(None, _conf(tmp_path / "input", tmp_path), lambda: runs.append(0) or 0, stop)))
    thread.start()
    try:
        time.sleep(0.6)
        assert runs == []  # nothing in the input: no run
        for n in range(3):  # a burst, each file within the settle time of the previous one
            (folder / f"{n}.jpg").write_bytes(b"x" * (n + 1))
            (folder / "notes.txt").write_text("not an image")
            time.sleep(0.1)
        assert _until(lambda: len(runs) == 1, 5)
        time.sleep(0.8)
        assert len(runs) == 1  # settled and processed: no second run for the same files
        (folder / "3.jpg").write_bytes(b"y")
        assert _until(lambda: len(runs) == 2, 5)
    finally:
        stop.set()
        thread.join(5)
    assert runs[-1] == 0 and not thread.is_alive()  # watch returned 0 once stopped


# Its own process (signals are the point) starts its own JVM: minutes on the 2-core machine, so in
# `make test-long` with the other whole-process checks.
@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.long
def test_photos_dropped_into_the_watched_folder_are_processed_then_term_stops_it(spark, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    sets = [f"lake.root={tmp_path / 'lake'}", "spark.master=local[2]", "spark.shuffle_partitions=2", "silver.weights=random",
            f"silver.keras_home={tmp_path / 'keras'}", "silver.download=false", "watch.settle_seconds=1", "watch.poll_seconds=0.5"]
    log = tmp_path / "watch.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            # The image layers: a few photos of two made-up fruits are no classifier's Training and Test sets.
            [sys.executable, "-m", "pipelines.run", "--watch", str(folder), "--no-report", "--jobs", "bronze,silver,gold",
             *(a for s in sets for a in ("--set", s))],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    try:
        assert _until(lambda: "watch: " in log.read_text(), 900), log.read_text()[-3000:]
        write_good_input(folder)  # a few photos at once (gold's PCA needs more than one)
        assert _until(lambda: "run ended with exit" in log.read_text(), 900), log.read_text()[-3000:]
        assert "run ended with exit 0" in log.read_text(), log.read_text()[-3000:]
        conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
        for table in ("bronze", "silver", "gold"):
            rows = spark.read.format("delta").load(Layout.from_conf(conf).location(table)).collect()
            assert len(rows) == GOOD_IMAGES and {r["label"] for r in rows} == {"Fruit 0", "Fruit 1"}, table
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "SIGTERM received, stopping" in text and "watch: stopped" in text and "Traceback" not in text


def test_watching_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from pipelines import run

    assert run.main(["--watch", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith(f"run: --watch {tmp_path / 'nowhere'}: no such folder")
