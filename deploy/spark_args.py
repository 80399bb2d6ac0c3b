"""Spark settings shared by both EMR modes: the shipped Python environment and the stage command.

The environment archive is unpacked by Spark in each container as ./environment
(`spark.archives=...#environment`), and PYSPARK_PYTHON points the driver and the executors at its
interpreter; so the cluster needs no bootstrap action and Serverless no custom image.
"""

from __future__ import annotations

import os

from deploy.package import code_uris
from deploy.settings import Settings

ENV_PYTHON = "./environment/bin/python"


# The job of aws.one_application: every stage of aws.stages in one Spark application.
CHAIN_JOB = "chain"


def jobs(s: Settings) -> list[str]:
    """The job runs (Serverless) or steps (cluster) of one deployment run, in order: one per stage
    of aws.stages, or with aws.one_application the one job `chain` (pipelines/run.py) running them
    all in one Spark application, each stage still behind its own gate."""
    return [CHAIN_JOB] if s.conf["aws.one_application"] else list(s.conf["aws.stages"])


def stage_arguments(s: Settings, job: str) -> list[str]:
    """Arguments after the entry script: the module to run, then exactly the conf the deploy tool loaded.

    Every --conf file (conf/aws.yaml when none was given) and every --set, in order, so the jobs
    resolve the same lake, input and settings that provision granted and package uploaded. The
    chain job runs `pipelines.run` over aws.stages (the quality report stays with `deploy status`).
    """
    options = [a for file in s.job_conf_files for a in ("--conf", file)]
    head = ["run", "--jobs", ",".join(s.conf["aws.stages"]), "--no-report"] if job == CHAIN_JOB else [job]
    return [*head, *options, *(a for override in s.job_overrides for a in ("--set", override))]


def forwarded_env(s: Settings) -> dict[str, str]:
    """Variables of aws.forward_env set here, to be set on the driver so conf resolves the same there."""
    return {name: os.environ[name] for name in s.conf["aws.forward_env"] if os.environ.get(name)}


def environment_conf(s: Settings) -> list[tuple[str, str]]:
    return [("spark.archives", f"{code_uris(s)['env_archive']}#environment")]
