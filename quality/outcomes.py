"""The record of every gate: one row per validated batch in a Delta table under the lake.

Stages read it to refuse to run on a layer whose last validation failed, and `quality.report`
prints it. A run that validated no batch (nothing new) leaves a row too, so every run of a stage
is on record; it is no validation, and the layer's last validation stays the one the next stage
checks (`latest`). A Delta table (not loose JSON files) because appends from concurrent stages are safe
under Delta's optimistic concurrency, the same code reads it on local disk and on S3A, and
"the latest row per layer" is one query.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import lake, lakefs
from pipelines.config import Conf
from pipelines.layout import Layout

OUTCOME_SCHEMA = T.StructType(
    [
        T.StructField("layer", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("success", T.BooleanType(), False),
        T.StructField("validated_at", T.TimestampType(), False),
        T.StructField("batch_rows", T.LongType(), False),
        T.StructField("evaluated_expectations", T.IntegerType(), False),
        T.StructField("failed_expectations", T.ArrayType(T.StringType()), False),
        # The counts of the <layer>_totals suite (batch_quarantine_rate, unaccounted_<up>_images, ...).
        T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), False),
        # What the stage passed as context (for example the input folder), as text.
        T.StructField("context", T.MapType(T.StringType(), T.StringType()), False),
        # Data Docs page of the run's first failed suite (or of its rows suite when all passed).
        T.StructField("report_path", T.StringType(), False),
        T.StructField("result_paths", T.ArrayType(T.StringType()), False),
        T.StructField("docs_index", T.StringType(), False),
    ]
)


@dataclass(frozen=True)
class Outcome:
    layer: str
    run_id: str
    success: bool
    validated_at: datetime
    batch_rows: int
    evaluated_expectations: int
    failed_expectations: list[str]
    metrics: dict[str, float]
    report_path: str
    result_paths: list[str]
    docs_index: str
    context: dict[str, str] = field(default_factory=dict)

    @property
    def validated(self) -> bool:
        """False for the row of a run that had no batch to validate (no expectation evaluated)."""
        return self.evaluated_expectations > 0

    def as_row(self) -> dict:
        return {name: getattr(self, name) for name in OUTCOME_SCHEMA.fieldNames()}


# Rows of runs that validated nothing, held while a chain runs (`held_until_end`), by table location.
_held: dict[str, list[Outcome]] = {}


def record(spark: SparkSession, conf: Conf, outcome: Outcome) -> None:
    """Append one outcome (a single-row Delta commit), or hold it until the end of the chain
    (`held_until_end`) when it is the row of a run that validated nothing."""
    layout = Layout.from_conf(conf)
    location = layout.location("quality_outcomes")
    if not outcome.validated and location in _held:
        _held[location].append(outcome)
        return
    _append(spark, layout, [outcome])


def _append(spark: SparkSession, layout: Layout, rows: list[Outcome]) -> None:
    """Append `rows` in one commit. When the table's latest commit is then the one right after the
    commit the remembered answers of `latest_runs` hold, it can only be this append: the answers
    are brought up to date with these rows, without reading the table."""
    location = layout.location("quality_outcomes")
    before = lake.latest_commit(spark, location)
    remembered = _latest_read.get(location) or _read_answers_file(spark, layout)
    frame = spark.createDataFrame([outcome.as_row() for outcome in rows], OUTCOME_SCHEMA)
    frame.write.format("delta").mode("append").save(location)
    after = lake.latest_commit(spark, location)
    if remembered is None or before is None or remembered[0] != before or after is None or after[0] != before[0] + 1:
        return  # answers of another state, or another commit came too: the next read reads the table
    validations, last_runs = dict(remembered[1]), dict(remembered[2])
    newest = lambda o: (o.validated_at.timestamp(), o.run_id)  # noqa: E731 - instants, not wall-clock times
    for outcome in (_as_read(row) for row in rows):
        for answers, counted in ((last_runs, True), (validations, outcome.validated)):
            current = answers.get(outcome.layer)
            if counted and (current is None or newest(outcome) >= newest(current)):
                answers[outcome.layer] = outcome
    _remember(spark, layout, after, validations, last_runs)


def _as_read(outcome: Outcome) -> Outcome:
    """The outcome as a read of the table gives it back: PySpark returns a timestamp as a naive
    datetime in the process's local time zone (`fromtimestamp` keeps the instant, DST fold included)."""
    at = outcome.validated_at
    return replace(outcome, validated_at=datetime.fromtimestamp(at.timestamp()) if at.tzinfo is not None else at)


@contextmanager
def held_until_end(spark: SparkSession, conf: Conf) -> Iterator[None]:
    """Within the block, the rows of runs that validated nothing are held and appended in one commit
    when it ends, failed or not: a chain of stages with nothing new commits once, not once per stage
    (each commit of a small Delta table costs about a second). Validations are appended at once:
    the next stage's upstream check reads them. A process killed in the block loses only the held
    rows, which say that a run found nothing to validate."""
    location = Layout.from_conf(conf).location("quality_outcomes")
    if location in _held:  # already holding (a chain inside a chain): the outer block appends
        yield
        return
    _held[location] = []
    try:
        yield
    finally:
        rows = _held.pop(location)
        if rows:
            _append(spark, Layout.from_conf(conf), rows)


# The last answers of `latest_runs`, by location, with the table's commit they were read at.
_latest_read: dict[str, "Answers"] = {}


def latest(spark: SparkSession, conf: Conf, validated: bool = True) -> dict[str, Outcome]:
    """The most recent validation of each layer that has one; with validated=False, the most
    recent row, a run that validated nothing included."""
    validations, last_runs = latest_runs(spark, conf)
    return validations if validated else last_runs


def latest_runs(spark: SparkSession, conf: Conf) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
    """Both answers of `latest` from one read of the table: (the most recent validation of each
    layer, the most recent row of each layer).

    Read again only when the table has a commit since the answers this process remembers (one
    listing of its log): the stages of a chain each check their upstream layer's outcome. The
    answers are also kept in a file beside the stage marks with the commit they hold, and brought
    up to date by this process's own appends (`_append`), so a new process, a no-op chain first,
    reads that file instead of the table while no other process has committed to it.
    """
    layout = Layout.from_conf(conf)
    location = layout.location("quality_outcomes")
    commit = lake.latest_commit(spark, location)
    remembered = _latest_read.get(location)
    if commit is not None and (remembered is None or remembered[0] != commit):
        remembered = _read_answers_file(spark, layout)  # another process's answers, maybe at this commit
    if commit is not None and remembered is not None and remembered[0] == commit:
        _latest_read[location] = remembered
        return dict(remembered[1]), dict(remembered[2])
    table = lake.read_table(spark, location)
    if table is None:
        return {}, {}
    validated = F.col("evaluated_expectations") > 0
    order = (F.col("validated_at").desc(), F.col("run_id").desc())
    newest = F.row_number().over(Window.partitionBy("layer").orderBy(*order))
    newest_validated = F.row_number().over(Window.partitionBy("layer", validated).orderBy(*order))
    rows = (
        table.withColumn("_newest", newest).withColumn("_validated", F.when(validated, newest_validated))
        .where("_newest = 1 OR _validated = 1").collect()
    )
    validations = {row["layer"]: _outcome(row) for row in rows if row["_validated"] == 1}
    last_runs = {row["layer"]: _outcome(row) for row in rows if row["_newest"] == 1}
    if commit is not None:
        _remember(spark, layout, commit, validations, last_runs)
    return validations, last_runs


# The answers of latest_runs are also kept in a small file beside the stage marks, with the commit
# they hold: a new process whose table has that same latest commit reads the file instead of the
# table (the first Delta read of a process costs ~10 s of JVM warm-up: most of a no-op chain).
ANSWERS_FILE = "quality_outcomes"
Answers = tuple[list[int], dict[str, Outcome], dict[str, Outcome]]


def _remember(spark: SparkSession, layout: Layout, commit: list[int], validations: dict, last_runs: dict) -> None:
    """Keep the answers in memory and in the answers file. The file is a cache: failing to write it
    costs the next process a read of the table, never a stage's run (nor a read-only report's)."""
    location = layout.location("quality_outcomes")
    _latest_read[location] = (commit, dict(validations), dict(last_runs))
    document = {
        "table": location, "commit": commit,
        "validations": {layer: _as_json(o) for layer, o in validations.items()},
        "last_runs": {layer: _as_json(o) for layer, o in last_runs.items()},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="fruits-outcomes-") as scratch:
            local = Path(scratch) / "answers.json"
            local.write_text(json.dumps(document, indent=1), encoding="utf-8")
            lakefs.put_file(spark, local, layout.mark(ANSWERS_FILE))
    except Exception:  # noqa: BLE001 - an unwritable marks folder only loses the cache
        pass


def _read_answers_file(spark: SparkSession, layout: Layout) -> Answers | None:
    """The answers _remember kept for this outcome table, or None (no file, a torn one, or one of
    another table, e.g. after quality.outcomes_table changed: the table is read)."""
    try:
        raw = lakefs.read_small_file(spark, layout.mark(ANSWERS_FILE))
        document = json.loads(raw) if raw is not None else None
        if document is None or document["table"] != layout.location("quality_outcomes"):
            return None
        answers = tuple({layer: _from_json(o) for layer, o in document[key].items()} for key in ("validations", "last_runs"))
        return list(document["commit"]), answers[0], answers[1]
    except Exception:  # noqa: BLE001 - an unreadable cache is no answer: the table is read
        return None


def _as_json(outcome: Outcome) -> dict:
    """The outcome with its time as an instant (microseconds since the epoch): the file is read
    back by processes in any time zone, each giving it as a read of the table would (_as_read)."""
    at = outcome.validated_at
    return {**outcome.__dict__, "validated_at": int(at.replace(microsecond=0).timestamp()) * 1_000_000 + at.microsecond}


def _from_json(document: dict) -> Outcome:
    """As PySpark gives a timestamp read from the table (a naive local time, to the microsecond)."""
    micros = int(document["validated_at"])
    local = datetime.fromtimestamp(micros // 1_000_000).replace(microsecond=micros % 1_000_000)
    return Outcome(**{**document, "validated_at": local})


def _outcome(row) -> Outcome:
    return Outcome(**{name: value for name, value in row.asDict(recursive=True).items() if not name.startswith("_")})
