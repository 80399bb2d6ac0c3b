"""`python -m pipelines.run`: the declared stages in one application, each with its own gate, the
first failure stopping the chain with its exit code (in this process: the run joins the test session,
as the stages do under spark-submit)."""

from __future__ import annotations

import pytest

from pipelines import run, stages
from pipelines.config import load_conf
from pipelines.layout import Layout
from quality import outcomes
from tests.conftest import jpeg_bytes
from tests.quality.test_stage_commands import write_bad_input, write_good_input


def test_jobs_default_to_the_declared_stages_and_a_list_must_keep_the_chains_order():
    assert run.chosen_jobs(None) == list(stages.names())
    assert run.chosen_jobs("bronze,silver") == ["bronze", "silver"]
    assert run.chosen_jobs("bronze, silver, gold, classifier, catalog") == [*stages.names(), "catalog"]
    for wrong, why in [("silver,bronze", "not in the chain's order"), ("bronze,fruit", "unknown stage 'fruit'"), (",", "no job")]:
        with pytest.raises(ValueError, match=why):
            run.chosen_jobs(wrong)


# The image layers: the classifier needs Training and Test images of the same fruits (tests/classifier/).
IMAGE_LAYERS = ",".join(stages.through("gold"))


def _options(tmp_path, input_path, run_id):
    settings = [
        f"input.path={input_path}", f"lake.root={tmp_path / 'lake'}", f"run.id={run_id}", "spark.master=local[2]",
        "spark.shuffle_partitions=2", "silver.weights=random", f"silver.keras_home={tmp_path / 'keras'}",
        "silver.download=false",
    ]
    return ["--conf", "conf/local.yaml", "--jobs", IMAGE_LAYERS, *(a for s in settings for a in ("--set", s))]


@pytest.mark.spark
def test_the_chain_runs_every_stage_in_one_application_and_stops_at_the_first_failure(spark, tmp_path, capsys):
    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
    bad = write_bad_input(tmp_path / "bad")
    assert run.main(_options(tmp_path, bad, "chain-bad")) == 1
    err = capsys.readouterr().err
    assert "bronze quality gate failed for run chain-bad" in err
    assert "run: bronze failed (exit 1); the jobs after it (silver, gold) did not run" in err
    assert set(outcomes.latest(spark, conf)) == {"bronze"}

    good = write_good_input(tmp_path / "good")
    assert run.main(_options(tmp_path, good, "chain-good")) == 0
    out = capsys.readouterr().out
    assert "run: bronze, silver, gold done in one application" in out and "Quality gates of the lake" in out
    latest = outcomes.latest(spark, conf)
    assert {layer: (o.run_id, o.success) for layer, o in latest.items()} == {
        layer: ("chain-good", True) for layer in stages.through("gold")
    }
    for table in stages.through("gold"):
        assert Layout.from_conf(conf).read(spark, table).count() == 4


def test_a_wrong_job_list_is_one_line_and_exit_2(capsys):
    assert run.main(["--jobs", "gold,bronze"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run: --jobs 'gold,bronze': ") and len(err.strip().splitlines()) == 1


@pytest.mark.spark
def test_the_chain_does_not_start_while_another_writer_holds_the_lake(spark, tmp_path, capsys):
    """The lake lock (pipelines/lock.py): exit 1 naming the holder, and no stage ran."""
    from pipelines import lock

    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path / 'lake'}"])
    good = write_good_input(tmp_path / "good")
    with lock.held(conf, "erase", "erase-1"):
        assert run.main([*_options(tmp_path, good, "chain-blocked"), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "run: the lake" in err and "is busy: erase run erase-1 by" in err
    assert Layout.from_conf(conf).read(spark, "bronze") is None
