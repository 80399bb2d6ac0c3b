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


def stage_arguments(s: Settings, stage: str) -> list[str]:
    """Arguments after the entry script: the stage, then exactly the conf the deploy tool loaded.

    Every --conf file (conf/aws.yaml when none was given) and every --set, in order, so the jobs
    resolve the same lake, input and settings that provision granted and package uploaded.
    """
    options = [a for file in s.job_conf_files for a in ("--conf", file)]
    return [stage, *options, *(a for override in s.job_overrides for a in ("--set", override))]


def forwarded_env(s: Settings) -> dict[str, str]:
    """Variables of aws.forward_env set here, to be set on the driver so conf resolves the same there."""
    return {name: os.environ[name] for name in s.conf["aws.forward_env"] if os.environ.get(name)}


def environment_conf(s: Settings) -> list[tuple[str, str]]:
    return [("spark.archives", f"{code_uris(s)['env_archive']}#environment")]
