"""The one place that builds the SparkSession, from conf.

Delta's SQL extension and catalog, S3A settings (endpoint, path style, TLS, credentials from the
environment, server-side encryption), the app name per stage, and local defaults for small data.

Under `spark-submit` (EMR, or a local submit) the JVM already exists: master, driver memory and
packages then come from the submit command, and this module only adds the session settings.
`python -m pipelines.session --submit-args --conf conf/local.yaml` prints the options a local
`spark-submit` needs (the Maven jars, logging).

A JVM started here takes the Maven packages' jars from the list the first resolution left in the
Ivy folder (`make setup` makes it), so a run resolves nothing and prints none of Ivy's report, and
it logs Spark's routine lines to a file (conf `spark.log_dir`), keeping the console for the stage's
own lines and errors. Such a JVM also maps the classes of Spark, Delta and Hadoop from a class
archive when `make setup` made one for this Java and these jars (pipelines/jvm_archive.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pyspark
from pyspark import SparkContext
from pyspark.sql import SparkSession

from pipelines.config import Conf, ConfError, is_remote, load_conf, resolve_location

DELTA_SESSION = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def launched_by_spark_submit() -> bool:
    """True when a JVM gateway was started by spark-submit (or a notebook kernel) for us."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def jvm_settings(conf: Conf, app_name: str) -> dict[str, str]:
    """Settings that only take effect when the JVM starts: master, driver memory, jars, logging,
    `spark.driver_java_options` and the class archive.

    The packages' jars come from the resolved list when there is one (resolved_jars), else from an
    Ivy resolution. `app_name` names the log file.
    """
    settings = {"spark.driver.memory": conf["spark.driver_memory"]}
    if conf["spark.master"]:
        settings["spark.master"] = conf["spark.master"]
    if conf["spark.packages"]:
        jars = resolved_jars(conf)
        if jars:
            settings["spark.jars"] = ",".join(jars)
        else:
            settings["spark.jars.packages"] = conf["spark.packages"]
            if conf["spark.ivy_dir"]:
                settings["spark.jars.ivy"] = resolve_location(conf["spark.ivy_dir"])
    if conf["spark.log_dir"]:
        log_file = Path(resolve_location(conf["spark.log_dir"])) / f"{app_name}.log"
        config_file = "file:" + resolve_location(conf["spark.log_config"])
        settings[JAVA_OPTIONS] = shlex.join([f"-Dlog4j2.configurationFile={config_file}", f"-Dfruits.log.file={log_file}"])
    if conf["spark.driver_java_options"]:
        settings = merge_java_options(settings, {JAVA_OPTIONS: conf["spark.driver_java_options"]})
    archive = class_archive(conf)
    if archive is not None and archive.is_file():
        settings = merge_java_options(settings, {JAVA_OPTIONS: shlex.join(class_archive_options(archive))})
    return settings


def class_archive_options(archive: Path) -> list[str]:
    """The JVM options that map `archive` (Java's application class-data sharing, AppCDS).

    Its own log lines are off: an archive another Java or other jars made (a JDK update, a
    pyspark upgrade) is refused by the JVM, which then loads every class from the jars as without
    it, and says so on the console, where it would be noise in every stage's output.
    """
    return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds*=off"]


CLASS_ARCHIVE_PREFIX = "classes-"  # then a digest of the JVM and the jars (class_archive)


def class_archive(conf: Conf) -> Path | None:
    """Where the driver JVM's class archive for this Java and these jars is (whether made or not),
    None without `spark.class_archive_dir` or before the packages' jars were resolved.

    The name is a digest of what the archive is only valid for: the JVM that spark-submit starts
    (its `java` and `libjvm.so`), Spark's own jars and the packages' jars, each by path, size and
    modification time (the JVM refuses an archive made with another classpath or JVM build, and
    loads the classes from the jars as without one). The heap size is not in it: Java checks only
    the compressed-pointer modes, the same for every heap under 32 GB.
    """
    if not conf["spark.class_archive_dir"]:
        return None
    packages = resolved_jars(conf) if conf["spark.packages"] else []
    java = java_executable()
    if packages is None or java is None:
        return None
    spark_jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    libjvm = java.parent.parent / "lib" / "server" / "libjvm.so"
    digest = hashlib.sha256()
    for path in [java, *([libjvm] if libjvm.is_file() else []), *sorted(spark_jars.glob("*.jar")), *map(Path, packages)]:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return Path(resolve_location(conf["spark.class_archive_dir"])) / f"{CLASS_ARCHIVE_PREFIX}{digest.hexdigest()[:16]}.jsa"


def java_executable() -> Path | None:
    """The `java` spark-submit starts (bin/spark-class: $JAVA_HOME/bin/java, else the one on PATH)."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(os.path.realpath(found)) if found and Path(found).is_file() else None


def resolved_jars_list(conf: Conf) -> Path | None:
    """Where the jars of `spark.packages` are listed once resolved (one list per package set)."""
    if not conf["spark.packages"] or not conf["spark.ivy_dir"]:
        return None
    digest = hashlib.sha256(conf["spark.packages"].encode()).hexdigest()[:16]
    return Path(resolve_location(conf["spark.ivy_dir"])) / "resolved" / f"{digest}.txt"


def resolved_jars(conf: Conf) -> list[str] | None:
    """The local jar files of `spark.packages` as last resolved, or None when a resolution is needed
    (never resolved, or a listed jar is gone from the cache)."""
    listing = resolved_jars_list(conf)
    if listing is None or not listing.is_file():
        return None
    jars = [line for line in listing.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return jars if jars and all(Path(jar).is_file() for jar in jars) else None


def record_resolved_jars(spark: SparkSession, conf: Conf) -> None:
    """After a session resolved `spark.packages`, list the jars it got for the next sessions."""
    listing = resolved_jars_list(conf)
    if listing is None or resolved_jars(conf) is not None:
        return
    jars = [jar.removeprefix("file://") for jar in spark.sparkContext.getConf().get("spark.jars", "").split(",") if jar]
    if not jars:
        return
    listing.parent.mkdir(parents=True, exist_ok=True)
    partial = listing.with_suffix(".partial")
    partial.write_text(f"# jars of {conf['spark.packages']}\n" + "\n".join(jars) + "\n", encoding="utf-8")
    partial.replace(listing)


# conf key -> Hadoop S3A key (after "fs.s3a."), each left at Hadoop's default when the conf value is null.
_S3A_RETRY_KEYS = {
    "s3.attempts_maximum": "attempts.maximum",
    "s3.retry_limit": "retry.limit",
    "s3.retry_interval": "retry.interval",
    "s3.connection_establish_timeout": "connection.establish.timeout",
}


def s3a_settings(conf: Conf, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Hadoop S3A settings from conf; credentials are read from the environment variables conf names."""
    environ = os.environ if environ is None else environ
    prefix = "spark.hadoop.fs.s3a."
    settings = {
        prefix + "impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        prefix + "path.style.access": str(conf["s3.path_style_access"]).lower(),
        prefix + "connection.ssl.enabled": str(conf["s3.ssl_enabled"]).lower(),
    }
    if conf["s3.endpoint"]:
        settings[prefix + "endpoint"] = conf["s3.endpoint"]
    if conf["s3.region"]:
        settings[prefix + "endpoint.region"] = conf["s3.region"]
    access_key = environ.get(conf["s3.access_key_env"], "")
    secret_key = environ.get(conf["s3.secret_key_env"], "")
    if access_key and secret_key:
        settings[prefix + "access.key"] = access_key
        settings[prefix + "secret.key"] = secret_key
        token = environ.get(conf["s3.session_token_env"], "")
        if token:
            settings[prefix + "session.token"] = token
            settings[prefix + "aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            )
        else:
            settings[prefix + "aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    for key, hadoop_key in _S3A_RETRY_KEYS.items():
        if conf[key] is not None:
            settings[prefix + hadoop_key] = str(conf[key])
    if conf["s3.encryption_algorithm"]:
        settings[prefix + "encryption.algorithm"] = conf["s3.encryption_algorithm"]
        if conf["s3.encryption_key"]:
            settings[prefix + "encryption.key"] = conf["s3.encryption_key"]
    return settings


def session_settings(conf: Conf) -> dict[str, str]:
    """Every setting the session gets, whether or not the JVM is ours to start."""
    settings = {
        **DELTA_SESSION,
        "spark.sql.shuffle.partitions": str(conf["spark.shuffle_partitions"]),
        # binaryFile reads open one small file per image: cap the scan's task count instead of
        # letting Spark's 4 MB open cost per file split a few MB of images into hundreds of tasks.
        "spark.sql.files.maxPartitionNum": str(conf["spark.max_file_partitions"]),
        # Delta rebuilds a table's state (its file list) in this many partitions (default 50), and
        # every query on the table filters that state in as many tasks: size it as the tables' logs.
        "spark.databricks.delta.snapshotPartitions": str(conf["spark.delta_snapshot_partitions"]),
        # Delta's VACUUM lists and compares a table's files in stages of this many tasks (Spark's
        # default 10,000: ~170,000 tasks and ~38 s on 2 cores for a four-file table, in every erasure
        # and maintenance run); Spark's parallel listing of many paths caps its tasks at it too.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(conf["spark.shuffle_partitions"]),
        "spark.sql.session.timeZone": "UTC",
        # Spark's progress bar redraws one line in a terminal; in a log file or CI output it is noise.
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta's own retention check stays on; the lake is append/merge only.
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        **s3a_settings(conf),
    }
    if not conf["spark.query_codegen"]:
        settings.update(INTERPRETED_QUERIES)
    settings.update({str(k): str(v) for k, v in conf["spark.extra"].items()})
    return settings


# `spark.query_codegen: false`: queries evaluated by Spark's interpreted path, compiling no Java
# (whole-stage code generation off, and the expression factories' NO_CODEGEN mode). Spark marks the
# factory setting as internal, not meant for end users: its interpreted path is the one Spark falls
# back to when generated code fails to compile, and Spark's own tests run every expression that way.
INTERPRETED_QUERIES = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


_GLUE_CLIENT_FACTORY = "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"


def catalog_settings(conf: Conf) -> dict[str, str]:
    """Settings of the persistent table catalog (pipelines/catalog.py): a Hive metastore.

    `catalog.glue: true` (EMR): the AWS Glue Data Catalog, through EMR's Glue client for the Hive
    metastore. Otherwise an embedded Derby database under `catalog.metastore_dir` (pyspark ships
    spark-hive and Derby), with derby.log beside it rather than in the current folder. These are
    static settings: only a session started with them has this catalog, which is why the stages,
    which address tables by path, do not ask for it.
    """
    settings = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": "/".join([conf.path("lake.root"), conf["catalog.warehouse"].strip("/")]),
    }
    if conf["catalog.glue"]:
        settings["spark.hadoop.hive.metastore.client.factory.class"] = _GLUE_CLIENT_FACTORY
        return settings
    metastore = conf.path("catalog.metastore_dir")
    if is_remote(metastore):
        raise ConfError(
            f"catalog.metastore_dir={metastore!r} must be a local folder (an embedded Derby database); "
            f"on EMR set catalog.glue: true to use the Glue Data Catalog"
        )
    settings["spark.hadoop.javax.jdo.option.ConnectionURL"] = f"jdbc:derby:;databaseName={metastore}/metastore_db;create=true"
    settings[JAVA_OPTIONS] = f"-Dderby.system.home={metastore}"
    return settings


def build_spark_session(
    conf: Conf, stage: str, catalog: bool = False, java_options: Sequence[str] = ()
) -> SparkSession:
    """Create (or join, under spark-submit) the session for one stage, named `<prefix>-<stage>`.

    `catalog=True` adds catalog_settings (the persistent metastore; spark.extra still wins).
    `java_options` are added to the driver JVM's when this call starts it.
    """
    if not launched_by_spark_submit():
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    app_name = f"{conf['spark.app_name_prefix']}-{stage}"
    builder = SparkSession.builder.appName(app_name)
    settings = {**catalog_settings(conf), **session_settings(conf)} if catalog else session_settings(conf)
    starts_jvm = not launched_by_spark_submit()
    if starts_jvm:
        settings = merge_java_options(settings, jvm_settings(conf, app_name))
        if java_options:
            settings = merge_java_options(settings, {JAVA_OPTIONS: shlex.join(java_options)})
    for key, value in settings.items():
        builder = builder.config(key, value)
    with jvm_console(conf, app_name, starts_jvm and SparkContext._active_spark_context is None):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf["spark.log_level"])
    keep_jars_off_python_path(spark)
    if starts_jvm:
        record_resolved_jars(spark, conf)
    return spark


@contextmanager
def jvm_console(conf: Conf, app_name: str, starting: bool):
    """With `spark.jvm_console: false`, the JVM started in this block writes its stdout and stderr
    to the application's log file (`spark.log_dir`) instead of the console.

    The JVM inherits file descriptors 1 and 2 when PySpark launches it, and so do the Python
    workers it forks under local[*]: the JDK's "Using incubator modules" notice and TensorFlow's
    native start-up lines would otherwise land in a notebook's cells, where ipykernel captures
    both descriptors. This process's own descriptors are restored when the block ends.
    """
    if not starting or conf["spark.jvm_console"] or not conf["spark.log_dir"]:
        yield
        return
    log_file = Path(resolve_location(conf["spark.log_dir"])) / f"{app_name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log_file, "ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in saved:
            os.close(descriptor)


def merge_java_options(settings: dict[str, str], more: dict[str, str]) -> dict[str, str]:
    """`settings` updated with `more`, the driver's Java options of both kept (catalog and logging)."""
    merged = {**settings, **more}
    options = [group[JAVA_OPTIONS] for group in (settings, more) if group.get(JAVA_OPTIONS)]
    if options:
        merged[JAVA_OPTIONS] = " ".join(options)
    return merged


def keep_jars_off_python_path(spark: SparkSession) -> None:
    """Take the Maven package jars off the Python path of the driver and of the Python workers.

    spark-submit adds every `--packages` jar to the Python files (in case a jar ships Python code),
    so PySpark puts them on `sys.path` here and in every Python worker. Ours ship no Python, and
    each package-metadata lookup (`importlib.metadata`, run by TensorFlow, scipy and Great
    Expectations as they import) then reads the whole index of the 500 MB AWS SDK bundle jar:
    measured here, importing TensorFlow in a worker took 4.7 s instead of 1.9 s, and importing
    Spark ML in the driver 8.3 s instead of 0.1 s. `_python_includes` is what PySpark sends to
    the workers with each Python function (pyspark/core/context.py); the jars stay on the JVM's
    classpath.
    """
    sc = spark.sparkContext
    jars = {name for name in sc._python_includes if name.lower().endswith(".jar")}
    sc._python_includes = [name for name in sc._python_includes if name not in jars]
    sys.path[:] = [entry for entry in sys.path if os.path.basename(entry) not in jars]


def submit_args(conf: Conf, app_name: str = "spark-submit", settings: dict[str, str] | None = None) -> list[str]:
    """spark-submit options equivalent to what build_spark_session sets when it starts the JVM, plus
    `settings` as `--conf` (their driver Java options joined to the logging ones)."""
    args: list[str] = []
    settings = merge_java_options(settings or {}, jvm_settings(conf, app_name))
    if "spark.master" in settings:
        args += ["--master", settings.pop("spark.master")]
    args += ["--driver-memory", settings.pop("spark.driver.memory")]
    if "spark.jars" in settings:
        args += ["--jars", settings.pop("spark.jars")]
    if "spark.jars.packages" in settings:
        args += ["--packages", settings.pop("spark.jars.packages")]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", action="append", default=[], help="conf overlay (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--warm-jars", action="store_true", help="resolve the Maven jars into the Ivy cache")
    group.add_argument("--submit-args", action="store_true", help="print the options for spark-submit")
    args = parser.parse_args(argv)
    conf = load_conf(args.conf or ["conf/local.yaml"], args.overrides)
    if args.submit_args:
        print(shlex.join(submit_args(conf)))
        return 0
    spark = build_spark_session(conf, "warm-jars")
    version = spark.version
    spark.range(1).write.format("delta").mode("overwrite").save(resolve_location("work/.warm-jars-check"))
    spark.stop()
    print(f"Spark {version} with {conf['spark.packages']} ready (Ivy cache: {conf['spark.ivy_dir']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
