"""`make demo` end to end: `--prepare`, then the live part with `--screenshots`, each its own
process as the presenter runs them, in a work folder of the test's own (the presenter's prepared
lake in work/demo and the deck's screenshots are not touched).

Marked long (`make test-long`): the prepare runs the whole chain on the cluster (10 to 20 minutes
on a loaded 2-core machine), the live part a few minutes more.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys

import pytest

from pipelines.config import PROJECT_ROOT, load_conf
from tests.s3_binary import server_binary_or_skip

pytestmark = [pytest.mark.long, pytest.mark.spark, pytest.mark.s3]
TIMEOUT_S = 3600
NEW_PHOTOS = 3
LOCAL = load_conf(["conf/local.yaml"])
PREPARED = len(LOCAL["demo.labels"]) * (LOCAL["demo.training_per_label"] + LOCAL["demo.test_per_label"])
SHOTS = ("spark-master", "spark-app", "bucket-images", "bucket-exports", "data-docs", "demo-1", "demo-2", "demo-3", "demo-4")


def demo(*args: str, sets: list[str]) -> str:
    env = {**os.environ, "KERAS_HOME": os.environ.get("KERAS_HOME", "work/keras")}
    command = [sys.executable, "-m", "rehearsal.demo", *args, *(a for item in sets for a in ("--set", item))]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


@pytest.mark.timeout(2 * TIMEOUT_S + 300)
def test_prepare_then_the_live_part_with_its_screenshots(tmp_path):
    server_binary_or_skip()
    shots, transcript = tmp_path / "shots", tmp_path / "transcript.txt"
    sets = [f"demo.work_dir={tmp_path / 'demo'}", f"demo.new_photos={NEW_PHOTOS}",
            f"demo.screenshots_dir={shots}", f"demo.transcript={transcript}"]

    prepared = demo("--prepare", sets=sets)
    assert "demo --prepare: ready in" in prepared and f"{PREPARED} images in the lake" in prepared
    for stage in ("bronze", "silver", "gold", "classifier"):
        assert re.search(rf"\[cluster\] {stage}[: ]", prepared), stage

    live = demo("--screenshots", sets=sets)
    print(live)
    assert live.count("+ Test/") == NEW_PHOTOS
    # Only the new photos went through the chain: each layer gained exactly them.
    for layer in ("bronze", "silver", "gold", "classifier"):
        assert re.search(rf"\|\s*{layer}\s*\|\s*{NEW_PHOTOS}\s*\|\s*{PREPARED + NEW_PHOTOS}\s*\|", live), layer
    assert re.search(r"demo: \d+ s for the live part: (fits|does NOT fit) the 120 s slot", live)
    assert transcript.read_text().startswith("[   0.0 s] demo: live part")
    for name in SHOTS:
        assert png_size(shots / f"{name}.png") == (1600, 900), name

    # Everything it started is stopped: the S3 server's and the master's ports are free again.
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)", live.split("demo: live part")[0]):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, port
