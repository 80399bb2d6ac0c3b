"""The lake's layout: where every table and folder lives, what each table holds and what identifies
its rows, built once from conf (`Layout.from_conf(conf)`).

Every location of the lake is `lake.root` joined with a folder named in conf (`lake.tables.<name>`,
`lake.staging`, `lake.marks`, `lake.reports`, `lake.models`, ...): local folders and s3a:// URIs
alike. The schemas stay defined beside the code that writes each table; the layout names them as
"module:ATTR" and imports them when asked (the stage modules bring TensorFlow or Spark ML), so a
reader asks the layout for a table by name, never pairs a location with a schema by hand.

Kept free of Spark at import: the lake lock and the serving bundle take their locations from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from pipelines import stages
from pipelines.config import Conf, ConfError

# Every table's schema ("module:ATTR", defined beside its writer) and the columns identifying a row
# (the stages' own tables: their declared keys, pipelines/stages.py).
_SCHEMAS = {
    "bronze": "pipelines.bronze:BRONZE_SCHEMA",
    "silver": "pipelines.silver:SILVER_SCHEMA",
    "gold": "pipelines.gold:GOLD_SCHEMA",
    "gold_variance": "pipelines.gold:VARIANCE_SCHEMA",
    "quarantine": "pipelines.lake:QUARANTINE_SCHEMA",
    "classifier": "pipelines.classifier:CLASSIFIER_SCHEMA",
    "classifier_metrics": "pipelines.classifier:METRICS_SCHEMA",
    "erasures": "pipelines.erase:AUDIT_SCHEMA",
    "pca_registry": "pipelines.gold_model:REGISTRY_SCHEMA",
    "quality_outcomes": "quality.outcomes:OUTCOME_SCHEMA",
}
_KEYS = {
    **{stage.name: stage.keys for stage in stages.STAGES},
    "gold_variance": ("model_version", "component"),
    "quarantine": ("stage", "path", "image_id"),
    "classifier_metrics": ("model_version",),
    "erasures": ("erasure_id", "image_id", "path_sha256"),
    "pca_registry": ("model_version",),
    "quality_outcomes": (),  # appended, never merged
}


@dataclass(frozen=True)
class Table:
    """A Delta table of the lake: its name, its location, its schema ("module:ATTR") and row keys."""

    name: str
    location: str
    schema_ref: str
    keys: tuple[str, ...]

    @property
    def schema(self):
        """The table's StructType (its module imported on demand)."""
        module, _, attr = self.schema_ref.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Layout:
    root: str
    tables: Mapping[str, Table]
    staging_root: str
    marks_root: str
    reports_root: str
    exports: str
    lock: str
    pca_models: str
    classifier_models: str
    quality_reports: str

    @classmethod
    def from_conf(cls, conf: Conf) -> "Layout":
        root = conf.path("lake.root")

        def join(*parts: str) -> str:
            return _join(root, *parts)

        folders = {name: join(folder) for name, folder in conf["lake.tables"].items()}
        folders["erasures"] = join(conf["lake.erasures"])
        folders["pca_registry"] = join(conf["lake.models"], conf["gold.models_dir"], conf["gold.registry"])
        folders["quality_outcomes"] = join(conf["lake.reports"], conf["quality.outcomes_table"])
        unknown = sorted(set(folders) - set(_SCHEMAS))
        if unknown:
            raise ConfError(
                f"lake.tables.{unknown[0]}: no schema is known for this table: declare it in pipelines/layout.py "
                f"beside its folder (known: {', '.join(_SCHEMAS)})"
            )
        tables = {name: Table(name, location, _SCHEMAS[name], _KEYS[name]) for name, location in folders.items()}
        return cls(
            root=root,
            tables=MappingProxyType(tables),
            staging_root=join(conf["lake.staging"]),
            marks_root=join(conf["lake.marks"]),
            reports_root=join(conf["lake.reports"]),
            exports=join(conf["lake.exports"]),
            lock=join(conf["lake.lock"]),
            pca_models=join(conf["lake.models"], conf["gold.models_dir"]),
            classifier_models=join(conf["lake.models"], conf["classifier.models_dir"]),
            quality_reports=join(conf["lake.reports"], conf["quality.reports_dir"]),
        )

    def table(self, name: str) -> Table:
        """The table `name`; ConfError naming its conf key when the conf declares no such table."""
        try:
            return self.tables[name]
        except KeyError:
            raise ConfError(
                f"unknown lake table '{name}': declare its folder as lake.tables.{name} in conf/base.yaml "
                f"(tables: {', '.join(self.tables)})"
            ) from None

    def location(self, name: str) -> str:
        return self.table(name).location

    def schema(self, name: str):
        return self.table(name).schema

    def keys(self, name: str) -> tuple[str, ...]:
        return self.table(name).keys

    def staging(self, stage: str, run_id: str) -> str:
        """The private staging table of one stage's run (pipelines/lake.py, write-audit-publish)."""
        return _join(self.staging_root, stage, run_id)

    def mark(self, stage: str) -> str:
        """The stage's mark file (pipelines/marks.py)."""
        return f"{self.marks_root}/{stage}.json"

    def reports(self, *parts: str) -> str:
        """A folder of reports (plots, GX results) under lake.reports."""
        return _join(self.reports_root, *parts)

    def folder(self, relative: str) -> str:
        """Another folder under lake.root, named by a setting outside lake.* (bench.reference_dir)."""
        return _join(self.root, relative)

    def pca_model(self, version: str) -> str:
        return f"{self.pca_models}/{version}"

    def classifier_model(self, version: str) -> str:
        return f"{self.classifier_models}/{version}"

    def read(self, spark, name: str):
        """The table `name` as a DataFrame, or None when no table was ever published there."""
        from pipelines import lake  # Spark: imported by the jobs that read, not by the lock or serving

        return lake.read_table(spark, self.location(name))

    def read_or_empty(self, spark, name: str):
        """The table `name`, or an empty DataFrame of its schema when none was published yet."""
        table = self.read(spark, name)
        return table if table is not None else spark.createDataFrame([], self.schema(name))


def _join(base: str, *parts: str) -> str:
    """`base` joined with sub-paths, empty ones skipped (local folders and s3a:// URIs alike)."""
    return "/".join([base, *(p.strip("/") for p in parts if p)])
