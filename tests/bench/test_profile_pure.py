"""bench.profile's tally of py-spy raw output (pure: a hand-written profile, no process)."""

from bench.profile import REST, SAMPLE_RATE, tally

MAIN = "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);<module> (pipelines/run.py:115)"
BRONZE = f"{MAIN};main (pipelines/run.py:79);run_chain (pipelines/run.py:89);main (pipelines/bronze.py:458)"


def line(stack: str, samples: int) -> str:
    return f"{stack} {samples}"


def test_each_main_thread_sample_counts_once_in_its_first_part_and_its_stage():
    raw = [
        line(f"{MAIN};main (pipelines/run.py:73);build_spark_session (pipelines/session.py:213);send (py4j/clientserver.py:1)", 40),
        # a gate inside write_audit_publish: the checkpoint part, not the staging one beside it
        line(f"{BRONZE};write_audit_publish (pipelines/lake.py:265);validate (quality/gates.py:206);"
             "run_checkpoints (quality/gx_runner.py:74);run (great_expectations/x.py:1)", 10),
        line(f"{BRONZE};write_audit_publish (pipelines/lake.py:261);stage_batch (pipelines/lake.py:103)", 30),
        line(f"{BRONZE};run (pipelines/bronze.py:365);first (pyspark/sql/dataframe.py:1)", 20),
        line("Thread-2 (py4j/clientserver.py:58);FinalizerWorker.run (py4j/clientserver.py:58)", 500),  # not the main thread
    ]
    seconds, parts, stages = tally(raw)
    assert seconds == 100 / SAMPLE_RATE
    assert parts == {
        "JVM and Spark session start": 2.0, "gate: GX checkpoint and Data Docs": 0.5,
        "staging writes (the batch computed)": 1.5, REST: 1.0,
    }
    assert stages == {"outside the stages": 2.0, "bronze": 3.0}


def test_an_empty_profile_is_zero():
    assert tally([]) == (0.0, {}, {})


def test_a_stage_run_by_bench_measure_counts_for_its_stage():
    chain = "_run_module_as_main (<frozen runpy>:198);main (bench/measure.py:380);run_chain (bench/measure.py:284)"
    raw = [
        line(f"{chain};run_unless_unchanged (pipelines/marks.py:90);run (pipelines/silver.py:300);stage_batch (pipelines/lake.py:103)", 4),
        line(f"{chain};require_upstream_passed (quality/gates.py:130)", 2),
    ]
    assert tally(raw)[2] == {"silver": 0.2, "outside the stages": 0.1}


def test_a_function_whose_name_ends_like_a_stage_entry_is_no_stage_entry():
    chain = "_run_module_as_main (<frozen runpy>:198);run_chain (bench/measure.py:284)"
    assert tally([line(f"{chain};_rejected_by_run (pipelines/gold.py:370)", 2)])[2] == {"outside the stages": 0.1}
