"""The session builder: Spark's Maven jars from the resolved list, on the JVM classpath and off every
Python path; Spark's log lines in a file."""

import sys

from pipelines import session
from pipelines.config import PROJECT_ROOT, load_conf


def _maven_jars(paths):
    return [p for p in paths if p.lower().endswith(".jar") and "userFiles-" in p]


def test_package_jars_are_off_the_python_path_of_driver_and_workers(spark):
    # Every jar spark-submit fetched for `--packages` would otherwise be read by each package
    # metadata lookup in Python (seconds per TensorFlow import in a worker).
    def worker_path(_):
        import sys as worker_sys

        yield list(worker_sys.path)

    worker_paths = spark.sparkContext.parallelize(range(2), 2).mapPartitions(worker_path).collect()
    assert worker_paths and all(_maven_jars(paths) == [] for paths in worker_paths)
    assert _maven_jars(sys.path) == []
    assert not [name for name in spark.sparkContext._python_includes if name.lower().endswith(".jar")]
    # The JVM still has them.
    assert "delta-spark" in spark.sparkContext.getConf().get("spark.jars", "")


# ---------------------------------------------------------------- JVM settings (pure)

def _conf(tmp_path, *overrides):
    return load_conf(["conf/local.yaml"], [f"spark.ivy_dir={tmp_path / 'ivy'}", f"spark.log_dir={tmp_path / 'logs'}", *overrides])


def _list_jars(conf, jars):
    listing = session.resolved_jars_list(conf)
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("# jars of the packages\n" + "\n".join(str(j) for j in jars) + "\n", encoding="utf-8")


def test_a_session_takes_the_resolved_jars_instead_of_resolving_again(tmp_path):
    conf = _conf(tmp_path)
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for jar in jars:
        jar.write_bytes(b"PK")
    _list_jars(conf, jars)
    settings = session.jvm_settings(conf, "fruits-bronze")
    assert settings["spark.jars"] == ",".join(str(j) for j in jars)
    assert "spark.jars.packages" not in settings and "spark.jars.ivy" not in settings
    args = session.submit_args(conf)
    assert args[args.index("--jars") + 1] == settings["spark.jars"] and "--packages" not in args


def test_a_jar_gone_from_the_cache_or_other_packages_mean_a_new_resolution(tmp_path):
    conf = _conf(tmp_path)
    _list_jars(conf, [tmp_path / "gone.jar"])
    settings = session.jvm_settings(conf, "fruits-bronze")
    assert settings["spark.jars.packages"] == conf["spark.packages"] and "spark.jars" not in settings
    assert settings["spark.jars.ivy"] == str(tmp_path / "ivy")
    other = _conf(tmp_path, "spark.packages=io.delta:delta-spark_2.13:4.0.0")
    assert session.resolved_jars_list(other) != session.resolved_jars_list(conf)


def test_spark_logs_go_to_a_file_per_application_beside_the_catalogs_java_options(tmp_path):
    conf = _conf(tmp_path)
    options = session.jvm_settings(conf, "fruits-gold")[session.JAVA_OPTIONS]
    assert f"-Dfruits.log.file={tmp_path / 'logs' / 'fruits-gold.log'}" in options
    assert f"-Dlog4j2.configurationFile=file:{PROJECT_ROOT / 'conf' / 'log4j2.properties'}" in options
    merged = session.merge_java_options(session.catalog_settings(conf), session.jvm_settings(conf, "fruits-catalog"))
    assert merged[session.JAVA_OPTIONS].startswith("-Dderby.system.home=") and "fruits-catalog.log" in merged[session.JAVA_OPTIONS]
    assert "-Dfruits.log.file" not in session.jvm_settings(_conf(tmp_path, "spark.log_dir="), "x").get(session.JAVA_OPTIONS, "")
    assert session.JAVA_OPTIONS not in session.jvm_settings(_conf(tmp_path, "spark.log_dir=", "spark.driver_java_options="), "x")


def test_the_test_session_was_started_from_the_resolved_list(spark):
    # `make setup` (python -m pipelines.session --warm-jars) resolved the packages once and listed the jars.
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.jars.packages") is None
    assert "delta-spark" in conf.get("spark.jars", "")


def test_jvm_console_false_sends_what_the_jvm_writes_to_its_log_file(tmp_path):
    """What a process started in the block writes on fds 1 and 2 (the JVM, its local Python workers)
    lands in <log_dir>/<app>.log; the caller's own descriptors are back afterwards."""
    import subprocess

    quiet = _conf(tmp_path, "spark.jvm_console=false")
    with session.jvm_console(quiet, "fruits-notebook", starting=True):
        subprocess.run(["sh", "-c", "echo jdk-notice >&2; echo worker-line"], check=True)
    assert (tmp_path / "logs" / "fruits-notebook.log").read_text().split() == ["jdk-notice", "worker-line"]
    probe = subprocess.run(["sh", "-c", "echo still-here >&2"], capture_output=True, text=True)
    assert probe.stderr == "still-here\n"
    loud = _conf(tmp_path, "spark.jvm_console=true")
    with session.jvm_console(loud, "fruits-stage", starting=True):
        pass
    assert not (tmp_path / "logs" / "fruits-stage.log").exists()


def test_a_vacuum_lists_the_table_in_a_few_tasks_not_ten_thousand(spark, tmp_path):
    """Delta's VACUUM sizes its listing stages by parallelPartitionDiscovery.parallelism; Spark's
    default (10,000) made a four-file table's VACUUM 170,000 tasks (~38 s): the session sizes it
    as the shuffles."""
    from delta.tables import DeltaTable

    location = str(tmp_path / "table")
    for n in range(3):
        spark.range(n, n + 1).write.format("delta").mode("append").save(location)
    DeltaTable.forPath(spark, location).delete("id = 0")
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    context = spark.sparkContext
    spark.conf.set(check, "false")
    context.setJobGroup("vacuum-tasks", "test: a VACUUM's task count")
    try:
        DeltaTable.forPath(spark, location).vacuum(0.0)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        spark.conf.set(check, "true")
    tasks = sum(_stage_tasks(context, "vacuum-tasks"))
    assert 0 < tasks < 1_000, tasks
    assert len(spark.read.format("delta").load(location).collect()) == 2


def _stage_tasks(context, group: str) -> list[int]:
    """The task count of each stage the jobs of `group` ran."""
    tracker = context.statusTracker()
    stages = [tracker.getStageInfo(s) for j in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(j).stageIds]
    return [stage.numTasks for stage in stages if stage is not None]


def test_a_query_filters_a_tables_file_list_in_as_many_tasks_as_conf_says(spark, tmp_path):
    """Every query on a Delta table lists its files from the table's state, in a job of one task per
    state partition (spark.delta_snapshot_partitions): 2 locally, where Delta's default made 50 and
    the shuffles' 8 (tables of tens of files locally)."""
    location = str(tmp_path / "table")
    spark.range(1).write.format("delta").save(location)  # one file: its scan is one task
    context = spark.sparkContext
    context.setJobGroup("state-tasks", "test: a table scan's file-list tasks")
    try:
        assert len(spark.read.format("delta").load(location).collect()) == 1
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    partitions = load_conf(["conf/local.yaml"])["spark.delta_snapshot_partitions"]
    tasks = _stage_tasks(context, "state-tasks")
    # The state's stages run one task per partition, the scan of the one file one task.
    assert partitions > 1 and partitions in tasks and max(tasks) == partitions, tasks


def test_the_driver_jvm_a_session_starts_runs_with_the_confs_java_options(spark):
    """conf/base.yaml `spark.driver_java_options` (the parallel collector) reach the JVM the test
    session started: its collectors are the parallel ones, not Java's default G1."""
    options = load_conf(["conf/local.yaml"])["spark.driver_java_options"]
    assert options == "-XX:+UseParallelGC"
    jvm = spark.sparkContext._jvm
    assert options in list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    collectors = {bean.getName() for bean in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}, collectors


# ---------------------------------------------------------------- the class archive

def test_the_test_session_maps_its_classes_from_the_archive_make_setup_made(spark):
    """`make setup` (python -m pipelines.jvm_archive) made the archive for this Java and these jars,
    and a JVM a session starts maps it: the archive file is among the JVM process's mappings."""
    from pathlib import Path

    archive = session.class_archive(load_conf(["conf/local.yaml"]))
    assert archive is not None and archive.is_file(), f"no class archive at {archive}: `make setup` makes it"
    assert f"-XX:SharedArchiveFile={archive}" in spark.sparkContext.getConf().get(session.JAVA_OPTIONS, "")
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    mapped = str(archive) in Path(f"/proc/{pid}/maps").read_text()
    assert mapped, f"the JVM refused the class archive {archive} (made by another Java or other jars?)"


def test_an_archive_is_named_for_its_java_and_jars_and_used_only_once_made(tmp_path, monkeypatch):
    conf = _conf(tmp_path, f"spark.class_archive_dir={tmp_path / 'jvm'}")
    jars = [tmp_path / "a.jar"]
    jars[0].write_bytes(b"PK")
    _list_jars(conf, jars)
    archive = session.class_archive(conf)
    assert archive.parent == tmp_path / "jvm" and archive.name.startswith(session.CLASS_ARCHIVE_PREFIX) and archive.suffix == ".jsa"
    assert "SharedArchiveFile" not in session.jvm_settings(conf, "fruits-bronze")[session.JAVA_OPTIONS]
    archive.parent.mkdir()
    archive.write_bytes(b"archive")
    options = session.jvm_settings(conf, "fruits-bronze")[session.JAVA_OPTIONS]
    assert f"-XX:SharedArchiveFile={archive}" in options and "fruits-bronze.log" in options
    # Another heap size: the same archive (Java checks only the compressed-pointer modes).
    assert session.class_archive(_conf(tmp_path, f"spark.class_archive_dir={tmp_path / 'jvm'}", "spark.driver_memory=2g")) == archive
    # Another jar (a new package version) or another Java: another archive.
    jars[0].write_bytes(b"PK, rebuilt")
    assert session.class_archive(conf) != archive
    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_bytes(b"#!")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert session.java_executable() == other_java and session.class_archive(conf) != archive
    assert session.class_archive(_conf(tmp_path, "spark.class_archive_dir=")) is None


def test_local_queries_compile_no_code_and_aws_keeps_spark_codegen(spark, monkeypatch):
    """conf/base.yaml `spark.query_codegen: false`: a query runs on Spark's interpreted path (no
    whole-stage code, next to no class compiled, where code generation compiles several);
    conf/aws.yaml keeps code generation for millions of rows."""
    compilations = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()

    def classes_compiled(multiplier: int) -> tuple[int, str]:
        before = compilations.getCount()
        query = spark.range(40).selectExpr(f"id * {multiplier} + 3 AS y", "sha2(CAST(id AS STRING), 256) AS h")
        query = query.where("y % 2 = 0").groupBy("h").count()
        assert len(query.collect()) == 20  # odd multipliers: the odd ids
        return compilations.getCount() - before, query._jdf.queryExecution().executedPlan().toString()

    interpreted, plan = classes_compiled(7)
    assert "*(" not in plan  # a whole-stage code block shows as *(n) before its operators
    try:
        for key in session.INTERPRETED_QUERIES:
            spark.conf.unset(key)
        generated, generated_plan = classes_compiled(11)
    finally:
        for key, value in session.INTERPRETED_QUERIES.items():
            spark.conf.set(key, value)
    assert "*(" in generated_plan and interpreted <= 1 < generated, (interpreted, generated)
    monkeypatch.setenv("FRUITS_BUCKET", "fruits-test")
    aws = session.session_settings(load_conf(["conf/aws.yaml"]))
    assert not set(session.INTERPRETED_QUERIES) & set(aws)
