"""Registration of the lake's tables in the catalog (the shared test session's in-memory catalog).

The persistent metastore across processes is checked in test_metastore.py; the logic that decides
what to create, re-point or drop is the same whatever the metastore.
"""

from __future__ import annotations

import shutil

import pytest

from pipelines import catalog
from pipelines.layout import Layout
from tests.catalog.conftest import write_tiny_lake

pytestmark = pytest.mark.spark
ALL = ["bronze", "classifier", "classifier_metrics", "gold", "gold_variance", "quarantine", "silver"]


def locations(spark, database: str) -> dict[str, str]:
    return {
        t: catalog._recorded_location(spark, database, t)
        for t in (r.tableName for r in spark.sql(f"SHOW TABLES IN {database}").collect())
    }


def test_registers_every_published_table_at_its_lake_location(spark, tiny_lake):
    registration = catalog.register_tables(spark, tiny_lake)

    assert registration.database == "fruits"
    assert registration.tables == ALL
    assert sorted(registration.plan.create) == ALL
    recorded = locations(spark, "fruits")
    assert recorded == {t: catalog.qualified(spark, Layout.from_conf(tiny_lake).location(t)) for t in ALL}
    assert spark.sql("SELECT count(*) FROM fruits.gold").first()[0] == 5
    assert spark.sql("DESCRIBE TABLE EXTENDED fruits.gold").where("col_name = 'Type'").first().data_type == "EXTERNAL"


def test_a_second_registration_changes_nothing(spark, tiny_lake):
    catalog.register_tables(spark, tiny_lake)
    again = catalog.register_tables(spark, tiny_lake)

    assert not again.changed
    assert sorted(again.plan.keep) == ALL


def test_tables_follow_the_lake_when_lake_root_changes(spark, tiny_lake, tmp_path):
    catalog.register_tables(spark, tiny_lake)
    moved = tiny_lake.with_overrides([f"lake.root={tmp_path / 'other-lake'}"])
    write_tiny_lake(spark, moved)
    spark.sql(f"DELETE FROM delta.`{Layout.from_conf(moved).location('gold')}` WHERE label = 'Banana'")

    registration = catalog.register_tables(spark, moved)

    assert sorted(registration.plan.repoint) == ALL
    assert spark.sql("SELECT count(*) FROM fruits.gold").first()[0] == 3
    assert spark.sql("SELECT count(*) FROM fruits.bronze").first()[0] == 6


def test_a_table_gone_from_the_lake_is_dropped_from_the_catalog_and_others_stay(spark, tiny_lake):
    catalog.register_tables(spark, tiny_lake)
    spark.sql("CREATE VIEW fruits.bananas AS SELECT * FROM fruits.bronze WHERE label = 'Banana'")
    shutil.rmtree(Layout.from_conf(tiny_lake).location("gold_variance"))

    registration = catalog.register_tables(spark, tiny_lake)

    assert registration.plan.drop == ("gold_variance",)
    assert registration.plan.unpublished == ("gold_variance",)
    names = {r.tableName for r in spark.sql("SHOW TABLES IN fruits").collect()}
    assert "gold_variance" not in names
    assert "bananas" in names  # an analyst's own view is not the catalog's to manage
    assert spark.sql("SELECT count(*) FROM fruits.bananas").first()[0] == 2


def test_dropping_a_registered_table_never_deletes_its_data(spark, tiny_lake):
    catalog.register_tables(spark, tiny_lake)
    spark.sql("DROP TABLE fruits.silver")

    assert Layout.from_conf(tiny_lake).read(spark, "silver").count() == 5
    assert "silver" in catalog.register_tables(spark, tiny_lake).plan.create


def test_unpublished_tables_are_skipped_until_they_exist(spark, make_conf):
    conf = make_conf(None, "catalog.database=fruits_empty")
    try:
        registration = catalog.register_tables(spark, conf)
        assert registration.tables == []
        assert registration.plan.unpublished == tuple(conf["catalog.tables"])
        assert spark.catalog.databaseExists("fruits_empty")
    finally:
        spark.sql("DROP DATABASE IF EXISTS fruits_empty CASCADE")


def test_the_shared_test_session_reports_its_catalog_as_in_memory(spark, tiny_lake):
    registration = catalog.register_tables(spark, tiny_lake)
    assert not registration.persistent
    assert "in-memory catalog of this session only" in catalog.summary_line(registration)
