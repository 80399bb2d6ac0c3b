"""The `%%configure -f` cell an EMR Studio notebook runs first: the jobs' code, environment and conf.

An EMR Studio Workspace's PySpark kernel (sparkmagic) sends each cell through Livy to the driver of
a Spark session, on an EMR cluster (attached through Jupyter Enterprise Gateway) or on an EMR
Serverless application with interactive sessions (conf `aws.studio`). That driver sees neither the
repository nor a virtualenv: ipykernel and the notebook's own dependencies are not on it, and the
environment archive leaves ipykernel out (it serves the executors and the jobs' drivers). So the
session is created with what a job gets from `deploy run` (docs/deploy.md, "EMR Studio"):
- the environment archive unpacked as ./environment in every container (`spark.archives`) and its
  interpreter for the driver's and the executors' Python (PYSPARK_PYTHON);
- the code archive (`spark.submit.pyFiles`), conf/ included; the notebook's first cell unpacks it
  on the driver to read the conf, as deploy/entry.py does for a job;
- FRUITS_CONF (the jobs' conf files) and the variables of aws.forward_env (FRUITS_BUCKET) in the
  driver's environment;
- the session settings that only take effect when a session starts: Delta's extension and catalog,
  and with `catalog.glue` the Glue Data Catalog as metastore (pipelines/session.py).
`python -m deploy studio --mode serverless|cluster` prints the cell. It is built from the same
functions as the jobs' requests, so the two cannot drift apart.
"""

from __future__ import annotations

import json

from deploy.package import code_uris
from deploy.serverless import spark_settings
from deploy.settings import Settings
from deploy.spark_args import ENV_PYTHON, environment_conf, forwarded_env
from pipelines import session

# Where each mode takes the driver's environment variables from: Serverless' own prefix, and YARN's
# application master (Livy starts an EMR cluster's sessions in YARN cluster mode).
DRIVER_ENV = {"serverless": "spark.emr-serverless.driverEnv.", "cluster": "spark.yarn.appMasterEnv."}
# Sizes a Serverless session takes from the job request (a cluster's come from its instance types).
SERVERLESS_SIZES = ("spark.driver.cores", "spark.driver.memory", "spark.executor.cores", "spark.executor.memory")


def configure_body(s: Settings, mode: str) -> dict:
    """The JSON of the `%%configure -f` cell (Livy's session request: its `conf`)."""
    if mode not in DRIVER_ENV:
        raise ValueError(f"mode must be one of {', '.join(DRIVER_ENV)}, not {mode!r}")
    driver_env = DRIVER_ENV[mode]
    variables = {"PYSPARK_PYTHON": ENV_PYTHON, "PYSPARK_DRIVER_PYTHON": ENV_PYTHON,
                 "FRUITS_CONF": ",".join(s.job_conf_files), **forwarded_env(s)}
    conf = {
        **dict(environment_conf(s)),
        "spark.submit.pyFiles": code_uris(s)["code_archive"],
        "spark.executorEnv.PYSPARK_PYTHON": ENV_PYTHON,
        **{driver_env + name: value for name, value in variables.items()},
        **session.DELTA_SESSION,
    }
    if s.conf["catalog.glue"]:
        conf.update(session.catalog_settings(s.conf))
    if mode == "serverless":
        job = dict(spark_settings(s))
        conf["spark.jars"] = job["spark.jars"]  # the release's Delta jars, as the jobs get them
        conf.update({key: job[key] for key in SERVERLESS_SIZES})
    return {"conf": conf}


def configure_cell(s: Settings, mode: str) -> str:
    return "%%configure -f\n" + json.dumps(configure_body(s, mode), indent=2)
