"""`make rehearse` end to end on a few images: the deploy's own jobs on a real multi-process cluster.

The rehearsal is its own process, as `make rehearse` runs it; its output is the evidence (each
step, the stages' summary lines from the cluster, the comparison with a local run).

Marked long (`make test-long`): it takes 10 to 25 minutes on a 2-core machine (four drivers,
each executor unpacking the 615 MB environment archive), a third of the 30 minutes `make test`
may take; `make rehearse` is the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines import stages
from pipelines.config import PROJECT_ROOT, load_conf
from tests.s3_binary import server_binary_or_skip

pytestmark = [pytest.mark.long, pytest.mark.spark, pytest.mark.s3]
IMAGES = 12


# Above the run's 10 to 25 minutes; on expiry the rehearsal gets a TERM and stops what it started.
TIMEOUT_S = 3600


@pytest.mark.timeout(TIMEOUT_S + 300)
def test_rehearsal_passes_on_a_few_images():
    server_binary_or_skip()
    env = {**os.environ, "KERAS_HOME": os.environ.get("KERAS_HOME", "work/keras")}
    rehearsal = subprocess.Popen(
        [sys.executable, "-m", "rehearsal", "--images", str(IMAGES)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = rehearsal.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rehearsal.terminate()
        stdout, stderr = rehearsal.communicate(timeout=120)
        pytest.fail(f"rehearsal still running after {TIMEOUT_S} s:\n{stdout[-3000:]}")
    done = subprocess.CompletedProcess(rehearsal.args, rehearsal.returncode, stdout, stderr)
    output = done.stdout
    print(output)
    assert done.returncode == 0, f"rehearsal failed:\n{output[-3000:]}\n{done.stderr[-3000:]}"
    assert "rehearse: PASSED" in output
    assert "2 workers alive" in output
    # Every stage of aws.stages ran on the cluster, each with executors in the workers' processes.
    for stage in (*load_conf(["conf/local.yaml"])["aws.stages"], *stages.AFTER_CHAIN):
        assert f"  {stage}: 2 executor processes ran in the workers' folders" in output, stage
    assert f"images under the input prefix: {IMAGES} (uploaded {IMAGES})" in output
    assert "FAIL" not in output
