"""Every AWS request the plans make is valid for botocore's service models (shapes, required members,
types, minimums): a request AWS would reject for its form fails here, not on a first real run.

The requests come from each command run with --dry-run, for every mode and the conf variants the
tests use, on the default release emr-spark-8.0.0; and from moto runs through a recording client
for the calls a dry run does not make (they depend on an answer). `s3.upload_file` is boto3's
transfer method, not an API operation: its ExtraArgs are validated as PutObject's input. This
shows the requests are well-formed for the API, not that AWS would accept their values.
"""

from __future__ import annotations

import io

import boto3
import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import ParamValidator

from deploy.__main__ import main
from tests.deploy.conftest import BUCKET, REGION, WITH_KEY
from tests.deploy.test_dry_run import COMMANDS, _calls, package_args  # noqa: F401 - fixture

_SESSION = botocore.session.get_session()
VARIANTS = {
    "default": [],
    "customer key": [WITH_KEY],
    "sse-s3": ["s3.encryption_algorithm=SSE-S3"],
    "warm executors": ["aws.serverless.initial_capacity.executors=2"],
    "warm driver": ["aws.serverless.initial_capacity={drivers: 1, executors: 0}"],
    "arm": ["aws.serverless.architecture=ARM64"],
    "spot tasks, subnet, kept alive": [
        "aws.cluster.task.count=2", "aws.cluster.subnet_id=subnet-0abc", "aws.cluster.keep_alive=true",
    ],
    "tls": [WITH_KEY, f"aws.cluster.security.tls_certificates_zip=s3://{BUCKET}/code/certs/emr-tls.zip"],
    "no glue": ["catalog.glue=false"],
    "one application": ["aws.one_application=true"],
    "emr studio": ["aws.studio=true", "aws.cluster.keep_alive=true"],
}  # fmt: skip
NEEDS_KEY = {"run --mode cluster"}


def validate(service: str, operation: str, params: dict) -> None:
    """Raise ParamValidationError when `params` do not fit the operation's input shape."""
    model = _SESSION.get_service_model(service)
    if operation == "upload_file":  # boto3 transfer: Filename/Bucket/Key/ExtraArgs -> PutObject
        op, params = model.operation_model("PutObject"), {"Bucket": params["Bucket"], "Key": params["Key"], **params["ExtraArgs"]}
    else:
        names = {botocore.xform_name(name): name for name in model.operation_names}
        assert operation in names, f"{service} has no operation {operation}"
        op = model.operation_model(names[operation])
    # Idempotency tokens (clientToken) are filled in by botocore itself before it validates.
    tokens = {name: "token" for name, shape in op.input_shape.members.items() if shape.metadata.get("idempotencyToken")}
    report = ParamValidator().validate({**tokens, **params}, op.input_shape)
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


def test_the_validator_catches_what_aws_refused():
    """Not vacuous: a driver count of 0 in initialCapacity (the API's minimum is 1) is reported."""
    bad = {"name": "x", "releaseLabel": "emr-spark-8.0.0", "type": "SPARK", "initialCapacity": {
        "DRIVER": {"workerCount": 0, "workerConfiguration": {"cpu": "2 vCPU", "memory": "8 GB"}}}}
    with pytest.raises(ParamValidationError, match="valid min value: 1"):
        validate("emr-serverless", "create_application", bad)
    with pytest.raises(ParamValidationError):
        validate("s3", "upload_file", {"Bucket": BUCKET, "Key": "k", "ExtraArgs": {"ServerSideEncryption": 1}})


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("command", [*COMMANDS, ["package"], ["cost"]], ids=lambda c: " ".join(c))
def test_every_dry_run_request_fits_the_service_model(cli, package_args, command, variant):  # noqa: F811
    sets = list(VARIANTS[variant])
    if " ".join(command[:3]) in NEEDS_KEY and WITH_KEY not in sets and "--set" not in command:
        sets.append(WITH_KEY)
    args = [*command, *(a for o in sets for a in ("--set", o)), "--dry-run"]
    status, out = cli(*args, *(package_args if command == ["package"] else []), dry_run_only=True)
    refused = " ".join(command[:3]) in NEEDS_KEY and variant == "sse-s3"  # no customer key: no cluster
    assert status == (2 if refused else 0), out
    for name, params in _calls(out):
        service, operation = name.split(".", 1)
        validate(service, operation, params)


class Recording:
    """A real (moto) client that validates each request before sending it."""

    def __init__(self, service: str, region: str):
        self.service, self.client = service, boto3.client(service, region_name=region)

    def __getattr__(self, operation):
        method = getattr(self.client, operation)
        if operation == "get_paginator":
            return method

        def call(**params):
            validate(self.service, operation, params)
            return method(**params)

        return call


def test_requests_that_follow_an_answer_fit_the_service_model(service_policy):
    """The calls a dry run cannot plan: region check of an existing bucket, security configuration lookup,
    application state polls, job state polls."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    sets = ["--set", service_policy, "--set", WITH_KEY, "--set", "aws.poll_seconds=0",
            "--set", "aws.serverless.release_label=emr-7.9.0", "--set", "aws.cluster.release_label=emr-7.9.0"]  # fmt: skip
    seen: set[str] = set()
    for command in (["provision"], ["run", "--mode", "serverless"], ["run", "--mode", "cluster", "--no-wait"], ["teardown"]):
        out = io.StringIO()
        assert main([*command, *sets], out=out, client_factory=Recording) == 0, out.getvalue()
        seen.update(line.split()[1] for line in out.getvalue().splitlines() if line.startswith("[aws] "))
    assert {"s3.get_bucket_location", "emr.describe_security_configuration", "emr-serverless.get_application",
            "emr-serverless.get_job_run"} <= seen  # fmt: skip
