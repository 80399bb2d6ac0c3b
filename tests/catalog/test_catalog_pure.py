"""Pure parts of the catalog: the registration plan, SQL text, conf checks, session settings."""

from __future__ import annotations

import pytest

from pipelines import catalog
from pipelines.config import ConfError, load_conf
from pipelines.session import catalog_settings

MANAGED = ["bronze", "silver", "gold"]


def conf(*overrides: str):
    return load_conf(["conf/local.yaml"], ["lake.root=/data/lake", *overrides])


def test_plan_creates_missing_repoints_moved_keeps_same_and_drops_gone():
    plan = catalog.plan_registration(
        MANAGED,
        in_lake={"bronze": "file:/new/bronze", "silver": "file:/lake/silver", "gold": "file:/lake/gold"},
        registered={"bronze": "file:/old/bronze", "silver": "file:/lake/silver"},
    )
    assert plan.create == {"gold": "file:/lake/gold"}
    assert plan.repoint == {"bronze": "file:/new/bronze"}
    assert plan.keep == ("silver",)
    assert plan.drop == () and plan.unpublished == ()


def test_plan_drops_a_registered_table_no_longer_in_the_lake_and_skips_unpublished_ones():
    plan = catalog.plan_registration(MANAGED, in_lake={"bronze": "file:/lake/bronze"}, registered={"gold": "file:/lake/gold"})
    assert plan.create == {"bronze": "file:/lake/bronze"}
    assert plan.drop == ("gold",)
    assert plan.unpublished == ("silver", "gold")


def test_plan_repoints_a_table_whose_recorded_location_is_unreadable():
    plan = catalog.plan_registration(["gold"], in_lake={"gold": "file:/lake/gold"}, registered={"gold": None})
    assert plan.repoint == {"gold": "file:/lake/gold"}


def test_plan_never_touches_tables_it_does_not_manage():
    plan = catalog.plan_registration(["gold"], in_lake={}, registered={"my_view": None, "gold": "file:/x"})
    assert plan.drop == ("gold",)
    assert "my_view" not in (*plan.drop, *plan.keep, *plan.create, *plan.repoint)


def test_create_table_sql_quotes_names_and_escapes_the_location():
    sql = catalog.create_table_sql("fruits", "gold", "s3a://b/it's\\lake/gold")
    assert sql == "CREATE TABLE IF NOT EXISTS `fruits`.`gold` USING DELTA LOCATION 's3a://b/it\\'s\\\\lake/gold'"
    assert catalog.drop_table_sql("fruits", "we`ird") == "DROP TABLE IF EXISTS `fruits`.`we``ird`"


@pytest.mark.spark
@pytest.mark.parametrize("value", ["plain", "it's", "back\\slash", "both \\' and '\\"])
def test_sql_string_round_trips_through_spark(spark, value):
    assert spark.sql(f"SELECT {catalog.sql_string(value)} AS v").first().v == value


@pytest.mark.parametrize("name", ["Fruits", "fruits-lake", "1fruits", ""])
def test_database_names_glue_would_refuse_are_refused_with_the_setting_named(name):
    with pytest.raises(ConfError, match="catalog.database"):
        catalog.database_name(conf(f"catalog.database='{name}'"))


def test_catalog_tables_must_be_lake_tables():
    with pytest.raises(ConfError, match="catalog.tables names golden"):
        catalog.managed_tables(conf("catalog.tables=[bronze, golden]"))


def test_local_catalog_is_a_derby_metastore_under_metastore_dir_with_the_warehouse_in_the_lake():
    settings = catalog_settings(conf("catalog.metastore_dir=/var/fruits/metastore"))
    assert settings["spark.sql.catalogImplementation"] == "hive"
    assert settings["spark.sql.warehouse.dir"] == "/data/lake/_warehouse"
    assert settings["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        "jdbc:derby:;databaseName=/var/fruits/metastore/metastore_db;create=true"
    )
    assert settings["spark.driver.extraJavaOptions"] == "-Dderby.system.home=/var/fruits/metastore"
    assert "spark.hadoop.hive.metastore.client.factory.class" not in settings


def test_glue_switch_uses_the_glue_client_and_no_local_database():
    settings = catalog_settings(conf("catalog.glue=true", "lake.root=s3a://bucket/lake"))
    assert settings["spark.hadoop.hive.metastore.client.factory.class"] == (
        "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"
    )
    assert settings["spark.sql.warehouse.dir"] == "s3a://bucket/lake/_warehouse"
    assert not any("jdo" in key or "derby" in value for key, value in settings.items())


def test_a_remote_derby_folder_is_refused_with_the_fix():
    with pytest.raises(ConfError, match="catalog.glue: true"):
        catalog_settings(conf("catalog.metastore_dir=s3a://bucket/metastore"))


def test_spark_sql_args_carry_catalog_and_delta_settings_but_no_secret(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    args = catalog.spark_sql_args(conf())
    joined = " ".join(args)
    assert "spark.sql.catalogImplementation=hive" in args
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in args
    assert args[:2] == ["--master", "local[*]"]
    assert "AKIDEXAMPLE" not in joined and "secret-value" not in joined


@pytest.mark.parametrize(
    "message",
    [
        "ERROR XSDB6: Another instance of Derby may have already booted the database /var/ms/metastore_db.",
        # What Python receives when a second process opens the same Derby database (seen with pyspark 4.0.2)
        "org.apache.hadoop.hive.ql.metadata.HiveException: java.lang.RuntimeException: Unable to instantiate "
        "org.apache.hadoop.hive.ql.metadata.SessionHiveMetaStoreClient",
    ],
)
def test_a_local_metastore_that_cannot_open_becomes_an_error_naming_the_folder_and_the_fix(message):
    error = catalog._metastore_error(conf("catalog.metastore_dir=/var/ms"), RuntimeError(message))
    assert isinstance(error, catalog.CatalogError)
    assert "/var/ms" in str(error) and "catalog.metastore_dir" in str(error) and "/var/ms/derby.log" in str(error)


def test_glue_failures_name_the_permissions_the_role_needs():
    error = catalog._metastore_error(
        conf("catalog.glue=true", "lake.root=s3a://bucket/lake"),
        RuntimeError("AccessDeniedException: not authorized to perform glue:GetDatabase"),
    )
    assert isinstance(error, catalog.CatalogError)
    assert "glue:GetDatabase" in str(error) and "'fruits'" in str(error)


def test_other_metastore_failures_are_not_disguised():
    original = RuntimeError("disk full")
    assert catalog._metastore_error(conf(), original) is original
