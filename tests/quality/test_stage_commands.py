"""Each stage's own command enforces its gate: a failing gate exits 1 and publishes nothing, and the
next stage exits 1 with its refusal; the exit codes of the contract (pipelines/cli.py execute_stage)
are asserted exactly, 0 done, 1 gate failed or upstream refused, 2 bad input or conf error.
(3, storage unreachable, is asserted by tests/reliability/test_s3_outage.py.)

The scenario goes through `pipelines.<stage>.main(argv)` as `python -m pipelines.<stage>` runs it,
in this process (build_spark_session joins the test session) on a few synthetic JPEGs, with the
random-weights model (the gates do not depend on what the features mean). One step, silver's
refusal, is a real `python -m pipelines.silver` process, for the exit code a scheduler sees; the
conf-error tests at the end are real processes too (they stop before any JVM starts).

What these tests protect: the audit passed by bronze.main, silver.main and gold.main to their run,
and the upstream check of the shared runner (execute_stage). Without any of them a test here fails.
"""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import pytest

from pipelines import lake
from pipelines.config import PROJECT_ROOT, Conf, load_conf
from pipelines.layout import Layout
from quality import outcomes
from tests.conftest import jpeg_bytes
from tests.quality.conftest import report_output

pytestmark = pytest.mark.spark

GOOD_IMAGES = 4


@dataclass
class Step:
    code: int
    out: str
    err: str


def write_good_input(root: Path) -> Path:
    """GOOD_IMAGES distinct small JPEGs under Training/<label>/."""
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 200, 40), (120, 40, 160)]
    for n in range(GOOD_IMAGES):
        path = root / "Training" / f"Fruit {n % 2}" / f"{n}_100.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(size=(48 + 8 * n, 40), color=colors[n]))
    return root


def write_bad_input(root: Path) -> Path:
    """Three files named as images that are not: bronze quarantines every one (rate 1 > 0.05)."""
    label = root / "Training" / "Broken Fruit"
    label.mkdir(parents=True)
    (label / "empty.jpg").write_bytes(b"")
    (label / "text.jpg").write_bytes(b"not a jpeg at all\n")
    (label / "truncated.jpg").write_bytes(jpeg_bytes(size=(300, 200))[:600])
    return root


class Lake:
    """One lake and the command-line options every step shares."""

    def __init__(self, root: Path):
        self.root = root
        self.conf: Conf = load_conf(["conf/local.yaml"], [f"lake.root={root / 'lake'}"])

    def args(self, run_id: str, *sets: str) -> list[str]:
        settings = [
            f"lake.root={self.root / 'lake'}", f"run.id={run_id}", "spark.master=local[2]",
            "spark.shuffle_partitions=2", "silver.weights=random", f"silver.keras_home={self.root / 'keras'}",
            "silver.download=false", *sets,
        ]
        return ["--conf", "conf/local.yaml", *(a for s in settings for a in ("--set", s))]

    def run(self, stage: str, run_id: str, *sets: str) -> Step:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = import_module(f"pipelines.{stage}").main(self.args(run_id, *sets))
        return Step(code, out.getvalue(), err.getvalue())

    def run_process(self, stage: str, run_id: str, *sets: str) -> Step:
        done = stage_process(stage, self.args(run_id, *sets))
        return Step(done.returncode, done.stdout, done.stderr)

    def rows(self, spark, table: str) -> int | None:
        """Rows of a lake table, None when it was never published."""
        frame = Layout.from_conf(self.conf).read(spark, table)
        return None if frame is None else frame.count()


@dataclass
class Scenario:
    lake: Lake
    steps: dict[str, Step]
    tables: dict[str, dict[str, int | None]]  # tables' rows right after each step
    files: dict[str, dict[str, int]]  # the lake's files (but the outcomes table's) and their mtimes after each step


def lake_files(conf: Conf) -> dict[str, int]:
    """Every file of the lake with its modification time (ns), the outcome record left out: the
    outcomes table's files and the latest answers kept beside the marks (quality/outcomes.py)."""
    layout = Layout.from_conf(conf)
    root, outcome_files = Path(conf.path("lake.root")), Path(layout.location("quality_outcomes"))
    answers = Path(layout.mark(outcomes.ANSWERS_FILE))
    return {
        str(p): p.stat().st_mtime_ns for p in root.rglob("*")
        if p.is_file() and outcome_files not in p.parents and p != answers
    }


TABLES = ("bronze", "silver", "gold", "quarantine")


@pytest.fixture(scope="module")
def scenario(spark, tmp_path_factory) -> Scenario:
    """The chain as an operator meets it: a broken upload, then good images with gates that fail, then pass.

    1. bronze on an all-bad input: gate fails; 2. silver: refuses (bronze's last validation failed);
    3. bronze on good images: passes; 4. silver with a features length no model gives: gate fails;
    5. gold: refuses; 6. silver: passes; 7. gold capped at 1 component with a variance target no
    single component reaches: gate fails; 8. gold: passes; 9-11. bronze, silver, gold again with
    nothing new.
    """
    root = tmp_path_factory.mktemp("stage-commands")
    bad, good = write_bad_input(root / "bad"), write_good_input(root / "good")
    chain = Lake(root)
    plan = [
        ("bronze-bad", "bronze", (f"input.path={bad}",)),
        ("silver-refused", "silver-process", ()),
        ("bronze-good", "bronze", (f"input.path={good}",)),
        ("silver-bad", "silver", ("quality.silver.feature_length=1000",)),
        ("gold-refused", "gold", ()),
        ("silver-good", "silver", ()),
        ("gold-bad", "gold", ("gold.max_k=1", "gold.variance_target=0.9999")),
        ("gold-good", "gold", ()),
        ("bronze-again", "bronze", (f"input.path={good}",)),
        ("silver-again", "silver", ()),
        ("gold-again", "gold", ()),
    ]
    steps, tables, files = {}, {}, {}
    for run_id, stage, sets in plan:
        if stage.endswith("-process"):
            steps[run_id] = chain.run_process(stage.removesuffix("-process"), run_id, *sets)
        else:
            steps[run_id] = chain.run(stage, run_id, *sets)
        tables[run_id] = {table: chain.rows(spark, table) for table in TABLES}
        files[run_id] = lake_files(chain.conf)
    return Scenario(chain, steps, tables, files)


def test_bronze_gate_failure_exits_1_and_publishes_nothing(scenario):
    step = scenario.steps["bronze-bad"]
    assert step.code == 1, step.err
    assert "bronze quality gate failed for run bronze-bad" in step.err and "nothing was published" in step.err
    assert "batch_quarantine_rate" in step.err
    assert scenario.tables["bronze-bad"] == {"bronze": None, "silver": None, "gold": None, "quarantine": None}


def test_silver_process_refuses_after_bronze_failed_and_exits_1(scenario):
    step = scenario.steps["silver-refused"]  # a real `python -m pipelines.silver` process
    assert step.code == 1, step.err[-3000:]
    refusal = [line for line in step.err.splitlines() if line.startswith("silver: ")]
    assert refusal and refusal[0].startswith("silver: silver refuses to run: the last validation of bronze (run bronze-bad")
    assert "python -m pipelines.bronze" in step.err and "Traceback" not in step.err
    assert scenario.tables["silver-refused"]["silver"] is None
    # Quiet: the jars come from the list `make setup` left (no Ivy resolution report), and Spark's
    # warnings go to the log file (conf spark.log_dir), not to the console.
    assert ":: resolving dependencies" not in step.err and " WARN " not in step.err, step.err[-3000:]


def test_good_bronze_run_exits_0_and_lifts_the_refusal(scenario):
    assert scenario.steps["bronze-good"].code == 0, scenario.steps["bronze-good"].err
    assert "\nbronze run bronze-good: files seen 4" in scenario.steps["bronze-good"].out
    assert scenario.tables["bronze-good"]["bronze"] == GOOD_IMAGES


def test_silver_gate_failure_exits_1_and_publishes_nothing(scenario):
    step = scenario.steps["silver-bad"]
    assert step.code == 1, step.err
    assert "silver quality gate failed for run silver-bad" in step.err
    assert "features_length (min_value=1000, max_value=1000)" in step.err
    assert scenario.tables["silver-bad"]["silver"] is None
    assert scenario.tables["silver-bad"]["quarantine"] == scenario.tables["bronze-good"]["quarantine"]


def test_gold_refuses_after_silver_failed_and_exits_1(scenario):
    step = scenario.steps["gold-refused"]
    assert step.code == 1, step.err
    assert step.err.startswith("gold: gold refuses to run: the last validation of silver (run silver-bad")
    assert "python -m pipelines.silver" in step.err
    assert scenario.tables["gold-refused"]["gold"] is None


def test_gold_gate_failure_exits_1_and_publishes_nothing(scenario):
    assert scenario.steps["silver-good"].code == 0, scenario.steps["silver-good"].err
    assert scenario.tables["silver-good"]["silver"] == GOOD_IMAGES
    step = scenario.steps["gold-bad"]
    assert step.code == 1, step.err
    assert "gold quality gate failed for run gold-bad" in step.err
    assert "variance_reached (min_value=0.9999" in step.err
    assert scenario.tables["gold-bad"]["gold"] is None


def test_gold_passes_once_its_settings_are_sound(spark, scenario):
    step = scenario.steps["gold-good"]
    assert step.code == 0, step.err
    assert "\ngold run gold-good: " in step.out
    assert scenario.tables["gold-good"]["gold"] == GOOD_IMAGES
    latest = outcomes.latest(spark, scenario.lake.conf)
    assert {layer: (o.run_id, o.success) for layer, o in latest.items()} == {
        "bronze": ("bronze-good", True), "silver": ("silver-good", True), "gold": ("gold-good", True),
    }


def test_runs_with_nothing_new_touch_nothing_but_are_recorded(spark, scenario):
    for run_id in ("bronze-again", "silver-again", "gold-again"):
        assert scenario.steps[run_id].code == 0, scenario.steps[run_id].err
        assert "quality gate" not in scenario.steps[run_id].out  # no audit: no GX, no Data Docs rebuild
    # No table, export, plot, report or staging file was written, changed or deleted by the three runs.
    assert scenario.files["gold-again"] == scenario.files["gold-good"]
    runs = outcomes.latest(spark, scenario.lake.conf, validated=False)
    assert {layer: (o.run_id, o.success, o.validated, o.batch_rows) for layer, o in runs.items()} == {
        layer: (f"{layer}-again", True, False, 0) for layer in ("bronze", "silver", "gold")
    }
    assert runs["bronze"].context["input"] == str(scenario.lake.root / "good")
    # The upstream check still reads each layer's last validation, passed here, so gold would run.
    assert {layer: o.run_id for layer, o in outcomes.latest(spark, scenario.lake.conf).items()} == {
        "bronze": "bronze-good", "silver": "silver-good", "gold": "gold-good",
    }
    report = report_output(scenario.lake.conf)
    assert "gold       PASSED         run gold-good" in report
    assert "last run: gold-again at " in report and "had no batch to validate (nothing new)" in report


# ---------------------------------------------------------------- more exit codes


def stage_process(stage: str, args: list[str]) -> subprocess.CompletedProcess:
    """`python -m pipelines.<stage> <args>` from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", f"pipelines.{stage}", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )


def test_missing_input_exits_2_and_names_it(spark, tmp_path):
    step = Lake(tmp_path).run("bronze", "bronze-missing", f"input.path={tmp_path / 'no-such-folder'}")
    assert step.code == 2, step.err
    assert step.err.startswith("bronze: ") and str(tmp_path / "no-such-folder") in step.err


@pytest.mark.parametrize("stage", ["bronze", "silver", "gold"])
def test_process_exit_2_on_a_conf_error(stage, tmp_path):
    """A setting that does not exist: the message names it, exit 2 (no JVM is started)."""
    done = stage_process(stage, ["--conf", "conf/local.yaml", "--set", "lake.no_such_setting=1"])
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "lake.no_such_setting" in done.stderr and "Traceback" not in done.stderr
