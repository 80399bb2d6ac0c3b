"""The lake layout (pipelines/layout.py): locations, schemas and keys from conf, no Spark session."""

import pytest
from pyspark.sql import types as T

from pipelines import stages
from pipelines.config import ConfError, load_conf
from pipelines.layout import Layout


def layout(root: str) -> Layout:
    return Layout.from_conf(load_conf(["conf/local.yaml"], [f"lake.root={root}"]))


def test_locations_under_a_local_root(tmp_path):
    lake = layout(str(tmp_path / "lake"))
    root = str(tmp_path / "lake")
    assert lake.root == root
    assert lake.location("bronze") == f"{root}/bronze"
    assert lake.location("gold_variance") == f"{root}/gold_variance"
    assert lake.location("erasures") == f"{root}/_audit/erasures"
    assert lake.location("pca_registry") == f"{root}/_models/pca/_registry"
    assert lake.location("quality_outcomes") == f"{root}/_reports/quality/outcomes"
    assert lake.staging("gold/quarantine", "run-1") == f"{root}/_staging/gold/quarantine/run-1"
    assert lake.mark("silver") == f"{root}/_marks/silver.json"
    assert lake.reports("gold", "run-1") == f"{root}/_reports/gold/run-1"
    assert lake.quality_reports == f"{root}/_reports/quality"
    assert lake.pca_model("v1") == f"{root}/_models/pca/v1"
    assert lake.classifier_model("v2") == f"{root}/_models/classifier/v2"
    assert (lake.exports, lake.lock) == (f"{root}/exports", f"{root}/_lock/lake.lock")
    assert lake.folder("bench_reference/") == f"{root}/bench_reference"


def test_locations_under_an_s3a_root():
    lake = layout("s3a://bucket/lake/")
    assert lake.root == "s3a://bucket/lake"
    assert lake.location("quarantine") == "s3a://bucket/lake/quarantine"
    assert lake.staging("bronze/bronze", "r") == "s3a://bucket/lake/_staging/bronze/bronze/r"
    assert lake.mark("gold") == "s3a://bucket/lake/_marks/gold.json"
    assert lake.classifier_models == "s3a://bucket/lake/_models/classifier"


def test_table_folders_follow_conf(tmp_path):
    conf = load_conf(["conf/local.yaml"], [f"lake.root={tmp_path}", "lake.tables.silver=layers/silver/"])
    assert Layout.from_conf(conf).location("silver") == f"{tmp_path}/layers/silver"


def test_an_unknown_table_names_its_conf_key(tmp_path):
    with pytest.raises(ConfError, match=r"unknown lake table 'platinum': declare its folder as lake\.tables\.platinum") as error:
        layout(str(tmp_path)).location("platinum")
    assert "\n" not in str(error.value)


def test_schemas_and_keys_come_from_the_layout(tmp_path):
    lake = layout(str(tmp_path))
    quarantine = lake.schema("quarantine")
    assert isinstance(quarantine, T.StructType)
    assert {"stage", "path", "image_id", "reason"} <= set(quarantine.fieldNames())
    assert set(lake.keys("quarantine")) <= set(quarantine.fieldNames())
    for table in lake.tables.values():
        assert isinstance(table.schema, T.StructType), table.name
        assert set(table.keys) <= set(table.schema.fieldNames()), table.name
    for stage in stages.STAGES:
        assert lake.keys(stage.name) == stage.keys


def test_the_keys_writers_still_name_agree_with_the_layout(tmp_path):
    from pipelines import gold, lake as lake_module

    lake = layout(str(tmp_path))
    assert lake.keys("quarantine") == lake_module.QUARANTINE_KEYS
    assert lake.keys("gold_variance") == gold.VARIANCE_KEYS
