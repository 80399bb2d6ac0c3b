"""`python -m deploy studio`: the %%configure cell of an EMR Studio notebook gives its Livy session what
a job of `deploy run` gets (same archives, interpreter, conf, variables), and the session settings
that only apply when a session starts (Delta, the Glue Data Catalog)."""

from __future__ import annotations

import json

import pytest

from deploy import studio
from deploy.package import code_uris
from deploy.serverless import job_run_request
from tests.deploy.conftest import BUCKET


def _cell(cli, *args) -> dict:
    status, out = cli("studio", *args, dry_run_only=True)  # no AWS call: any client fails the test
    assert status == 0, out
    head, body = out.split("\n", 1)
    assert head == "%%configure -f"
    return json.loads(body)["conf"]


def test_serverless_cell_gives_the_session_what_a_job_run_gets(cli, settings):
    conf = _cell(cli, "--mode", "serverless")
    s = settings()
    job = job_run_request(s, "app-id", "arn:aws:iam::123456789012:role/fruits-emr-serverless-job", "bronze")
    parameters = job["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"]
    assert f"--py-files {conf['spark.submit.pyFiles']}" in parameters
    for key in ("spark.archives", "spark.executorEnv.PYSPARK_PYTHON", "spark.emr-serverless.driverEnv.PYSPARK_PYTHON", "spark.jars"):
        assert f"--conf {key}={conf[key]}" in parameters, key
    assert conf["spark.archives"] == f"{code_uris(s)['env_archive']}#environment"
    assert conf["spark.emr-serverless.driverEnv.FRUITS_CONF"] == "conf/aws.yaml"
    assert conf["spark.emr-serverless.driverEnv.FRUITS_BUCKET"] == BUCKET
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.hadoop.hive.metastore.client.factory.class"].endswith("AWSGlueDataCatalogHiveClientFactory")


def test_cluster_cell_sets_the_yarn_driver_and_no_serverless_key(cli):
    conf = _cell(cli, "--mode", "cluster")
    assert conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert conf["spark.yarn.appMasterEnv.FRUITS_BUCKET"] == BUCKET
    assert not [key for key in conf if "emr-serverless" in key]
    assert "spark.jars" not in conf  # on a cluster the delta-defaults classification provides Delta


def test_without_glue_the_cell_leaves_the_metastore_alone(cli):
    conf = _cell(cli, "--mode", "serverless", "--set", "catalog.glue=false")
    assert "spark.hadoop.hive.metastore.client.factory.class" not in conf
    assert "spark.sql.catalogImplementation" not in conf


def test_an_unknown_mode_is_named(settings):
    with pytest.raises(ValueError, match="serverless"):
        studio.configure_body(settings(), "jupyterhub")
