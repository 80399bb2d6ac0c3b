"""The deploy tool's own job requests turned into `spark-submit` commands for the local cluster.

Nothing here decides what a job gets: the Serverless `StartJobRun` request and the cluster's step
come from `deploy.serverless.job_run_request` and `deploy.cluster.step`, unchanged. This module only
does what EMR does with them:
- Serverless: `spark-submit <sparkSubmitParameters> <entryPoint> <entryPointArguments>`, the
  `spark-defaults` of `configurationOverrides` as `--conf`, and each
  `spark.emr-serverless.driverEnv.NAME=VALUE` as a variable of the driver's environment;
- cluster: the step's `command-runner.jar` arguments, which are a spark-submit command already.
and adds what the platform provides on EMR (`platform_conf`): the master, the S3 endpoint, the
Hadoop S3 connector's jars on the class path, `s3://` served by S3A as EMRFS serves it there.

Python applications cannot run in standalone cluster deploy mode, so the driver runs in client mode
in a folder of its own holding the unpacked environment as ./environment, as the driver's container
does on EMR; the executors are the cluster's, in their own processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVERLESS_DRIVER_ENV = "spark.emr-serverless.driverEnv."
# Settings of the Serverless runtime with no meaning on a standalone cluster (worker disk size).
SERVERLESS_ONLY = ("spark.emr-serverless.",)
# YARN's equivalents on a cluster: the application master's environment is the driver's.
YARN_DRIVER_ENV = "spark.yarn.appMasterEnv."


class SubmitError(ValueError):
    """A request the translation cannot follow; the message names the argument."""


@dataclass
class SubmitCommand:
    """spark-submit arguments (after the executable), the driver's extra environment, what was left out."""

    arguments: list[str]
    driver_env: dict[str, str] = field(default_factory=dict)
    not_applicable: list[str] = field(default_factory=list)


def from_job_run(request: dict, platform: dict[str, str]) -> SubmitCommand:
    """The command EMR Serverless runs for a `StartJobRun` request (its `jobDriver.sparkSubmit`)."""
    submit = request["jobDriver"]["sparkSubmit"]
    # EMR Serverless splits the string on spaces, no shell (deploy/serverless.py refuses values with one).
    options = submit.get("sparkSubmitParameters", "").split()
    overrides = request.get("configurationOverrides", {}).get("applicationConfiguration", [])
    for classification in overrides:
        if classification.get("classification") == "spark-defaults":
            for key, value in classification.get("properties", {}).items():
                options += ["--conf", f"{key}={value}"]
    command = _split_driver_env(options, SERVERLESS_DRIVER_ENV)
    command.arguments = [
        *_platform_options(platform),
        *command.arguments,
        submit["entryPoint"],
        *submit.get("entryPointArguments", []),
    ]
    # What only the Serverless service acts on; the rehearsal uses the timeout as its own.
    if "monitoringConfiguration" in request.get("configurationOverrides", {}):
        command.not_applicable.append("monitoringConfiguration (EMR writes the job's logs to the bucket)")
    return command


def from_step(step: dict, platform: dict[str, str]) -> SubmitCommand:
    """The command a cluster step runs (`command-runner.jar spark-submit ...`), in client deploy mode."""
    args = list(step["HadoopJarStep"]["Args"])
    if not args or args[0] != "spark-submit":
        raise SubmitError(f"step {step.get('Name')!r} does not run spark-submit: {args[:1]}")
    args = args[1:]
    not_applicable = []
    if args[:2] == ["--deploy-mode", "cluster"]:
        args = args[2:]
        not_applicable.append("--deploy-mode cluster (a Python driver runs in client mode on a standalone cluster)")
    command = _split_driver_env(args, YARN_DRIVER_ENV)
    command.arguments = [*_platform_options(platform), *command.arguments]
    command.not_applicable = not_applicable + command.not_applicable
    return command


def _platform_options(platform: dict[str, str]) -> list[str]:
    options = ["--master", platform["spark.master"], "--deploy-mode", "client"]
    for key, value in platform.items():
        if key != "spark.master":
            options += ["--conf", f"{key}={value}"]
    return options


def _split_driver_env(options: list[str], env_prefix: str) -> SubmitCommand:
    """Move `--conf <env_prefix>NAME=VALUE` to the driver's environment; drop Serverless-only keys.

    Only spark-submit's own options are read (each `--option` takes one value); from the first other
    token on (the entry point and the application's arguments) everything is kept as it is.
    """
    command = SubmitCommand(arguments=[])
    index = 0
    while index < len(options) and options[index].startswith("--"):
        option = options[index]
        if index + 1 >= len(options):
            raise SubmitError(f"{option} without a value at the end of the spark-submit options")
        value = options[index + 1]
        index += 2
        if option != "--conf":
            command.arguments += [option, value]
            continue
        if "=" not in value:
            raise SubmitError(f"--conf without KEY=VALUE: {value!r}")
        key, setting = value.split("=", 1)
        if key.startswith(env_prefix):
            command.driver_env[key[len(env_prefix):]] = setting
        elif key.startswith(SERVERLESS_ONLY):
            command.not_applicable.append(f"{key}={setting}")
        else:
            command.arguments += ["--conf", f"{key}={setting}"]
    command.arguments += options[index:]
    return command


def platform_conf(master_url: str, s3_endpoint: str, region: str, class_path: list[str]) -> dict[str, str]:
    """What EMR provides every job without asking: master, S3 access for s3:// URIs, the S3 jars.

    On EMR the job's own settings (conf s3.*) configure S3A inside the job; these settings serve
    spark-submit itself and the executors fetching `s3://` resources (code, environment archive)
    before any of our code runs, as EMRFS does there.
    """
    s3a = "spark.hadoop.fs.s3a."
    jars = ":".join(class_path)
    return {
        "spark.master": master_url,
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        s3a + "endpoint": s3_endpoint,
        s3a + "endpoint.region": region,
        s3a + "path.style.access": "true",
        s3a + "connection.ssl.enabled": "false",
        "spark.driver.extraClassPath": jars,
        "spark.executor.extraClassPath": jars,
    }
