"""Write-audit-publish on real Delta tables: exactly-once inserts, conflicts retried."""

import shutil
import threading

import pytest
from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.errors.exceptions.captured import convert_exception

from pipelines import lake
from pipelines.layout import Layout

pytestmark = pytest.mark.spark


def test_publish_inserts_only_absent_keys(spark, tmp_path):
    location = str(tmp_path / "t")
    first = lake.publish(spark, spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string"), location, ["id"])
    again = lake.publish(spark, spark.createDataFrame([(2, "B"), (3, "c")], "id int, v string"), location, ["id"])
    rows = sorted(tuple(r) for r in spark.read.format("delta").load(location).collect())
    assert (first.inserted_rows, again.inserted_rows) == (2, 1)
    assert (first.attempts, again.attempts) == (1, 1)
    assert rows == [(1, "a"), (2, "b"), (3, "c")]


RACES = 3


def test_concurrent_publishers_never_duplicate(spark, tmp_path):
    """Two runs publishing overlapping batches at once: Delta rejects one commit, the MERGE retries.

    Each race is on a fresh table; races are repeated (at most RACES) until one of them really had
    a commit conflict (a result with attempts > 1), so the retry path is what the test checked.
    """
    batches = two_runs_batches(spark, range(1, 201))
    attempts = []
    for race in range(RACES):
        location = str(tmp_path / f"t{race}")
        lake.publish(spark, spark.createDataFrame([(0, "seed")], "id int, v string"), location, ["id"])
        results, errors = run_at_once([lambda b=b: lake.publish(spark, b, location, ["id"]) for b in batches])

        table = spark.read.format("delta").load(location)
        assert not errors, errors
        assert table.count() == 201 and table.select("id").distinct().count() == 201
        assert sorted(r.inserted_rows for r in results) == [0, 200]
        attempts.append(sorted(r.attempts for r in results))
        if attempts[-1][-1] > 1:
            break
    assert attempts[-1][0] == 1 and attempts[-1][-1] > 1, f"no commit conflict in {RACES} races: attempts {attempts}"


def test_conflict_detection_goes_by_delta_exception_types(spark):
    """Delta's conflicts reach Python as py4j errors holding the Java exception; its class decides,
    whatever the message says (a Python error quoting one is not a conflict)."""
    jvm = spark.sparkContext._jvm

    def raised(java_exception):
        return Py4JJavaError("An error occurred while calling o1.execute.\n", java_exception)

    for name in ("ConcurrentAppendException", "MetadataChangedException", "ProtocolChangedException", "ConcurrentTransactionException"):
        assert lake.is_commit_conflict(raised(getattr(jvm.io.delta.exceptions, name)("x"))), name
    wrapped = jvm.org.apache.spark.SparkException("job aborted", jvm.io.delta.exceptions.ConcurrentDeleteReadException("x"))
    assert lake.is_commit_conflict(raised(wrapped))
    assert not lake.is_commit_conflict(raised(jvm.java.io.FileNotFoundException("ConcurrentAppendException")))
    assert not lake.is_commit_conflict(RuntimeError("[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] ConcurrentAppendException: x"))


def test_a_half_created_table_is_a_conflict_only_while_creating(spark, tmp_path):
    """A table another writer is creating (log folder there, version 0 not yet) is a conflict only
    while this run creates the table too."""
    (tmp_path / "t" / "_delta_log").mkdir(parents=True)
    with pytest.raises(AnalysisException) as half_created:
        DeltaTable.forPath(spark, str(tmp_path / "t"))
    assert lake.is_commit_conflict(half_created.value, creating=True)
    assert not lake.is_commit_conflict(half_created.value)
    files_seen = convert_exception(spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaErrors.createTableWithNonEmptyLocation("t", "/lake/t"))
    assert lake.is_commit_conflict(files_seen, creating=True)
    assert not lake.is_commit_conflict(files_seen)
    with pytest.raises(AnalysisException) as absent:
        spark.read.format("delta").load(str(tmp_path / "absent"))
    assert not lake.is_commit_conflict(absent.value, creating=True)


def two_runs_batches(spark, ids):
    """One batch per run (rows `ids`, value `run1` / `run2`), computed before the race starts."""
    batches = [spark.createDataFrame([(i, f"run{n}") for i in ids], "id int, v string").cache() for n in (1, 2)]
    for batch in batches:
        batch.count()
    return batches


def run_at_once(calls) -> tuple[list, list]:
    """Run the callables in threads started together; their results and their exceptions."""
    results, errors = [], []
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        try:
            results.append(call())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_first_overwrites_leave_one_run_rows(spark, tmp_path):
    """Two runs creating the same table by overwrite at once (two first gold fits): the loser of
    Delta's commit race retries, both succeed and the table holds exactly one run's rows."""
    batches = two_runs_batches(spark, range(50))
    for attempt in range(3):
        location = str(tmp_path / f"t{attempt}")
        results, errors = run_at_once([lambda b=b: lake.overwrite(spark, b, location) for b in batches])
        rows = spark.read.format("delta").load(location).collect()
        assert not errors, errors
        assert [r.staged_rows for r in results] == [50, 50]
        assert len(rows) == 50 and len({r.v for r in rows}) == 1
        # Both created the table at once: the loser's commit conflicted and it retried.
        assert sorted(r.attempts for r in results)[-1] > 1, f"race {attempt}: no retry ({results})"


def test_publish_waits_for_a_table_another_run_is_creating(spark, tmp_path, monkeypatch):
    """Another process creating the table has made its `_delta_log` folder but not yet committed
    version 0 (what the second of two first gold fits saw): the publish retries instead of failing,
    and the other run, finishing its creation meanwhile, loses nothing either."""
    location = tmp_path / "t"
    (location / "_delta_log").mkdir(parents=True)
    first_retry = threading.Event()
    real_wait = lake.wait_before_retry

    def wait(seconds):
        first_retry.set()
        real_wait(seconds)

    monkeypatch.setattr(lake, "wait_before_retry", wait)

    def other_run_finishes_creating():
        assert first_retry.wait(120), "the publish never retried"
        shutil.rmtree(location / "_delta_log")
        return lake.publish(spark, spark.createDataFrame([(1, "other")], "id int, v string"), str(location), ["id"])

    results, errors = run_at_once([
        other_run_finishes_creating,
        lambda: lake.publish(spark, spark.createDataFrame([(2, "this")], "id int, v string"), str(location), ["id"]),
    ])
    assert not errors, errors
    assert sorted(r.inserted_rows for r in results) == [1, 1]
    assert max(r.attempts for r in results) > 1  # the run that found the table half-created retried
    assert sorted(r.id for r in spark.read.format("delta").load(str(location)).collect()) == [1, 2]


def test_publish_into_a_folder_that_stays_half_created_says_what_to_do(spark, tmp_path, monkeypatch):
    location = tmp_path / "t"
    (location / "_delta_log").mkdir(parents=True)
    monkeypatch.setattr(lake, "wait_before_retry", lambda seconds: None)
    with pytest.raises(lake.ConcurrentWriteError, match=r"still not a Delta table after 2 attempts.*move it away"):
        lake.publish(spark, spark.createDataFrame([(1, "a")], "id int, v string"), str(location), ["id"], attempts=2)


def test_fault_point_stops_a_run_between_its_two_publishes_and_a_rerun_completes(spark, make_conf, monkeypatch):
    """FRUITS_FAULT_AFTER_PUBLISH=quarantine:raise: the quarantine table is committed, the stage's own
    table is not; the rerun inserts the rest and nothing twice."""
    conf = make_conf()
    rows = spark.createDataFrame([("a", 1), ("b", 2)], "image_id string, v int")
    rejected = spark.createDataFrame([("c", "x/c.jpg", "bronze", "truncated: test", 3, None, "r", None)], lake.QUARANTINE_SCHEMA)
    batches = {"quarantine": lake.Batch(rejected, lake.QUARANTINE_KEYS), "bronze": lake.Batch(rows, ("image_id",))}  # bronze's order

    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "quarantine:raise")
    with pytest.raises(lake.InjectedFault, match="after publishing quarantine"):
        lake.write_audit_publish(spark, conf, "bronze", "run-1", batches)
    assert Layout.from_conf(conf).read(spark, "quarantine").count() == 1
    assert Layout.from_conf(conf).read(spark, "bronze") is None

    monkeypatch.delenv(lake.FAULT_AFTER_PUBLISH_ENV)
    results = lake.write_audit_publish(spark, conf, "bronze", "run-2", batches)
    assert {t: (r.inserted_rows, r.attempts) for t, r in results.items()} == {"bronze": (2, 1), "quarantine": (0, 1)}


def test_fault_point_with_an_unknown_action_says_how_to_run_normally(monkeypatch):
    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "bronze:explode")
    lake._fault_point("quarantine")  # another table: no effect
    with pytest.raises(ValueError, match="FRUITS_FAULT_AFTER_PUBLISH: unknown action 'explode'.*unset it"):
        lake._fault_point("bronze")


def a_fit_transaction(spark):
    """Gold's fit in miniature: the model registry (beside the models, outside lake.tables) and a
    variance table inserted, gold replaced, its rejections inserted, declared in that order."""
    return {
        "pca_registry": lake.Batch(spark.createDataFrame([("v2",)], "model_version string"), ("model_version",)),
        "gold_variance": lake.Batch(spark.createDataFrame([(1, "v2")], "component int, model_version string"), ("model_version", "component")),
        "gold": lake.Batch(spark.createDataFrame([("a", "v2"), ("b", "v2")], "image_id string, model_version string"), replace=True),
        "quarantine": lake.Batch(
            spark.createDataFrame([("c", None, "gold", "no_features: test", None, None, "r", None)], lake.QUARANTINE_SCHEMA),
            lake.QUARANTINE_KEYS,
        ),
    }


def test_batches_are_published_in_the_declared_order_each_inserted_or_replaced(spark, make_conf, monkeypatch):
    """The fault point after gold: the tables declared before it are committed (the registry beside
    the models), those after it are not; the rerun replaces gold (the old version's row is gone)
    and inserts nothing twice."""
    conf = make_conf()
    lake.publish(spark, spark.createDataFrame([("old", "v1")], "image_id string, model_version string"), Layout.from_conf(conf).location("gold"), ["image_id"])
    batches = a_fit_transaction(spark)

    monkeypatch.setenv(lake.FAULT_AFTER_PUBLISH_ENV, "gold:raise")
    with pytest.raises(lake.InjectedFault, match="after publishing gold"):
        lake.write_audit_publish(spark, conf, "gold", "run-1", batches)
    assert [r.model_version for r in Layout.from_conf(conf).read(spark, "pca_registry").collect()] == ["v2"]
    assert Layout.from_conf(conf).read(spark, "gold_variance").count() == 1
    assert sorted(r.image_id for r in Layout.from_conf(conf).read(spark, "gold").collect()) == ["a", "b"]
    assert Layout.from_conf(conf).read(spark, "quarantine") is None

    monkeypatch.delenv(lake.FAULT_AFTER_PUBLISH_ENV)
    results = lake.write_audit_publish(spark, conf, "gold", "run-2", batches)
    assert list(results) == ["pca_registry", "gold_variance", "gold", "quarantine"]
    assert {t: r.inserted_rows for t, r in results.items()} == {"pca_registry": 0, "gold_variance": 0, "gold": 2, "quarantine": 1}
    assert Layout.from_conf(conf).read(spark, "gold").count() == 2


def test_the_audit_sees_every_staged_table_and_the_published_ones_and_a_failure_publishes_nothing(spark, make_conf):
    conf = make_conf()
    lake.publish(spark, spark.createDataFrame([("a", 1)], "image_id string, v int"), Layout.from_conf(conf).location("silver"), ["image_id"])
    batches = a_fit_transaction(spark)
    seen = {}

    def audit(staged):
        seen.update(
            tables=list(staged.tables), batch=sorted(r.image_id for r in staged.batch.collect()),
            variance=staged.table("gold_variance").count(), silver=staged.table("silver").count(), bronze=staged.table("bronze"),
        )
        raise RuntimeError("gate failed")

    with pytest.raises(RuntimeError, match="gate failed"):
        lake.write_audit_publish(spark, conf, "gold", "run-1", batches, audit=audit)
    assert seen == {
        "tables": ["pca_registry", "gold_variance", "gold", "quarantine"], "batch": ["a", "b"],
        "variance": 1, "silver": 1, "bronze": None,  # staged rows first, else the published table (None: never)
    }
    assert Layout.from_conf(conf).read(spark, "pca_registry") is None
    for table in ("gold_variance", "gold", "quarantine"):
        assert Layout.from_conf(conf).read(spark, table) is None, table


def test_a_batch_is_either_inserted_by_keys_or_replaced(spark):
    rows = spark.createDataFrame([(1,)], "id int")
    for wrong in ({}, {"keys": ("id",), "replace": True}):
        with pytest.raises(ValueError, match="inserted by its keys or replaced"):
            lake.Batch(rows, **wrong)
    with pytest.raises(ValueError, match="cannot be empty=True"):
        lake.Batch(rows, replace=True, empty=True)


def test_an_empty_batch_is_neither_staged_nor_committed_but_its_table_exists_after_the_run(spark, make_conf, monkeypatch):
    """A run that rejected nothing declares its rejections `empty`: no staging table is written for
    them (spied on stage_batch), the audit sees no rows for them, the quarantine table is created
    when absent (analysts query it) and gets no commit when it exists."""
    conf = make_conf()
    layout = Layout.from_conf(conf)
    staged_tables, seen = [], {}
    stage_batch = lake.stage_batch
    monkeypatch.setattr(lake, "stage_batch", lambda spark, conf, name, run_id, rows: staged_tables.append(name) or stage_batch(spark, conf, name, run_id, rows))

    def audit(staged):
        seen["quarantine"] = staged.table("quarantine").count()

    def run(run_id, ids):
        rows = spark.createDataFrame([(i, 1) for i in ids], "image_id string, v int")
        never_read = spark.createDataFrame([("z", None, "bronze", "never staged", None, None, run_id, None)], lake.QUARANTINE_SCHEMA)
        return lake.write_audit_publish(
            spark, conf, "bronze", run_id,
            {"quarantine": lake.Batch(never_read, lake.QUARANTINE_KEYS, empty=True), "bronze": lake.Batch(rows, ("image_id",))},
            audit=audit,
        )

    first = run("run-1", ["a", "b"])
    assert staged_tables == ["bronze/bronze"] and seen == {"quarantine": 0}
    assert (first["quarantine"].inserted_rows, first["bronze"].inserted_rows) == (0, 2)
    assert layout.read(spark, "quarantine").count() == 0  # created, empty, nullable as a staged batch makes it
    assert all(field.nullable for field in layout.read(spark, "quarantine").schema)
    version = DeltaTable.forPath(spark, layout.location("quarantine")).history(1).first()["version"]
    run("run-2", ["c"])
    assert DeltaTable.forPath(spark, layout.location("quarantine")).history(1).first()["version"] == version
    assert layout.read(spark, "bronze").count() == 3
