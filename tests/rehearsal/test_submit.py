"""The deploy tool's requests turned into spark-submit commands for the local cluster (no Spark here)."""

from __future__ import annotations

import pytest

from deploy import cluster, serverless
from rehearsal import stand_ins
from rehearsal.submit import SubmitError, from_job_run, from_step, platform_conf

PLATFORM = platform_conf("spark://127.0.0.1:7077", "http://127.0.0.1:9000", "eu-west-3", ["/jars/hadoop-aws.jar", "/jars/bundle.jar"])


def test_serverless_request_becomes_a_client_mode_submit_with_the_driver_env_split_out(settings):
    s = settings()
    request = serverless.job_run_request(s, "app", "arn:aws:iam::000000000000:role/job", "silver")
    command = from_job_run(request, PLATFORM)
    args = command.arguments
    assert args[:4] == ["--master", "spark://127.0.0.1:7077", "--deploy-mode", "client"]
    submit = request["jobDriver"]["sparkSubmit"]
    # The entry point and its arguments close the command, exactly as the request gives them.
    tail = [submit["entryPoint"], *submit["entryPointArguments"]]
    assert args[-len(tail):] == tail and "silver" in tail
    assert command.driver_env["PYSPARK_PYTHON"] == "./environment/bin/python"
    assert command.driver_env["PYSPARK_DRIVER_PYTHON"] == "./environment/bin/python"
    confs = [args[i + 1] for i, a in enumerate(args) if a == "--conf"]
    assert any(c.startswith("spark.archives=") and c.endswith("#environment") for c in confs)
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in confs
    assert not any(c.startswith("spark.emr-serverless.") for c in confs)
    assert any(item.startswith("spark.emr-serverless.executor.disk=") for item in command.not_applicable)
    assert "--py-files" in args


def test_cluster_step_runs_in_client_mode_with_the_app_master_env_as_driver_env(settings):
    step = cluster.step(settings(), "gold")
    command = from_step(step, PLATFORM)
    args = command.arguments
    assert args.count("--deploy-mode") == 1 and args[args.index("--deploy-mode") + 1] == "client"
    assert command.driver_env["PYSPARK_PYTHON"] == "./environment/bin/python"
    assert any("client mode" in item for item in command.not_applicable)
    # After the platform's options, the step's own arguments in their order (minus the driver env).
    step_args = [a for a in step["HadoopJarStep"]["Args"][3:] if not a.startswith("spark.yarn.appMasterEnv.")]
    own = [a for a in args[4 + 2 * (len(PLATFORM) - 1):]]
    assert [a for a in own if a != "--conf"] == [a for a in step_args if a != "--conf"]


def test_a_step_that_is_not_spark_submit_is_refused():
    with pytest.raises(SubmitError, match="does not run spark-submit"):
        from_step({"Name": "x", "HadoopJarStep": {"Args": ["hadoop", "fs"]}}, PLATFORM)


@pytest.mark.parametrize(
    "parameters, message",
    [("--conf spark.x", "--conf without KEY=VALUE: 'spark.x'"), ("--py-files", "--py-files without a value")],
)
def test_a_malformed_option_is_named(parameters, message):
    request = {"jobDriver": {"sparkSubmit": {"entryPoint": "e.py", "sparkSubmitParameters": parameters}}}
    with pytest.raises(SubmitError, match=message):
        from_job_run(request, PLATFORM)


def test_job_user_policy_is_the_job_roles_s3_statements_plus_the_bucket_denies(settings):
    from deploy import iam, storage

    s = settings()
    policy = stand_ins.job_user_policy(s)
    s3_sids = {st.get("Sid") for st in iam.data_policy(s, stand_ins.ACCOUNT)["Statement"] if st["Effect"] == "Allow"}
    statements = policy["Statement"]
    # The role's own statements, unchanged (the same JSON deploy/iam.py builds)...
    role = [st for st in iam.data_policy(s, stand_ins.ACCOUNT)["Statement"] if stand_ins._is_s3(st)]
    assert statements[: len(role)] == role and {st.get("Sid") for st in role} <= s3_sids
    # ...no Glue or KMS statement (the server only speaks S3)...
    assert all(stand_ins._is_s3(st) for st in statements)
    # ...and the bucket policy's denies without Principal, except the TLS one (plain HTTP on loopback).
    denies = statements[len(role):]
    bucket_sids = {st["Sid"] for st in storage.bucket_policy(s)["Statement"]}
    assert {st["Sid"] for st in denies} == bucket_sids - {"DenyInsecureTransport"}
    assert all(st["Effect"] == "Deny" and "Principal" not in st for st in denies)


def test_the_local_executor_names_what_the_server_lacks_and_raises_any_other_refusal():
    import io

    from botocore.exceptions import ClientError

    def refusal(code):
        return ClientError({"Error": {"Code": code, "Message": code}}, "op")

    lifecycles = []

    class Client:
        def put_public_access_block(self, **_):
            raise refusal("MalformedXML")

        def put_bucket_policy(self, **_):
            raise refusal("AccessDenied")

        def put_bucket_lifecycle_configuration(self, **params):
            rules = params["LifecycleConfiguration"]["Rules"]
            if any(stand_ins.UNSUPPORTED_LIFECYCLE_ACTION in rule for rule in rules):
                raise refusal("InvalidArgument")
            lifecycles.append(rules)

    class Server:
        def client(self, service):
            return Client()

    ex = stand_ins.LocalExecutor(Server(), "eu-west-3", io.StringIO())
    assert ex.call("s3", "put_public_access_block", Bucket="b") is None
    rules = [{"ID": "logs", "Expiration": {"Days": 1}}, {"ID": "mpu", stand_ins.UNSUPPORTED_LIFECYCLE_ACTION: {"DaysAfterInitiation": 2}}]
    ex.call("s3", "put_bucket_lifecycle_configuration", Bucket="b", LifecycleConfiguration={"Rules": rules})
    assert lifecycles == [[rules[0]]]
    assert ex.not_supported == ["s3.put_public_access_block", f"{stand_ins.UNSUPPORTED_LIFECYCLE_ACTION} lifecycle rules (1)"]
    with pytest.raises(ClientError, match="AccessDenied"):
        ex.call("s3", "put_bucket_policy", Bucket="b", Policy="{}")
