"""The analyst's Spark SQL session of `make demo`: the lake the cluster wrote, read with the job user's keys.

Opened before the live part (a JVM start is not what the demo shows), it registers the lake's
tables in a catalog of its own (pipelines/catalog.py, a metastore under demo.work_dir) and runs
the demo's statements through `pipelines.sql`'s read-only check and text rendering, as
`python -m pipelines.sql` would.
"""

from __future__ import annotations

from pathlib import Path

from deploy.settings import Settings
from pipelines import catalog, sql
from pipelines.config import Conf, load_conf
from pipelines.session import build_spark_session
from rehearsal.s3_server import LocalS3Server, patched_environ
from rehearsal.stand_ins import LOCAL_CONF, reader_keys, reader_overrides


class Session:
    """A local Spark session on the demo's lake, stopped on exit."""

    def __init__(self, local: Conf, server: LocalS3Server, s: Settings, job_keys: tuple[str, str], work: Path):
        overrides = [
            *reader_overrides(server, s),
            # Registering a table makes the metastore write a folder marker under lake.root: with the
            # bucket's encryption, or the bucket policy's deny refuses it.
            f"s3.encryption_algorithm={s.conf['s3.encryption_algorithm']}",
            *([f"s3.encryption_key={s.kms_key}"] if s.kms_key else []),
            f"catalog.metastore_dir={work / 'metastore'}",
            f"spark.log_dir={work / 'logs'}",
        ]
        self.conf = load_conf([LOCAL_CONF], overrides)
        self.keys = reader_keys(local, job_keys)
        self.spark = None

    def __enter__(self) -> "Session":
        with patched_environ(self.keys):  # S3A takes the keys when the session starts
            self.spark = build_spark_session(self.conf, "demo-sql", catalog=True)
        try:
            catalog.register_tables(self.spark, self.conf)
        except BaseException:
            self.spark.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.spark is not None:
            self.spark.stop()
            self.spark = None

    def run(self, statement: str) -> list[str]:
        """The statement (read-only, checked first) and its result as Spark's text table, line by line."""
        sql.check_read_only(self.spark, [statement])
        lines = [f"> {line}" for line in statement.splitlines()]
        return lines + sql.render(self.spark.sql(statement), self.conf["catalog.show_rows"], 0).splitlines()
