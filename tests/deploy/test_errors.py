"""What the deploy command prints when something is missing or AWS refuses: one line, and its exit code."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from deploy.__main__ import main


class Refusing:
    """A client whose every call raises `error`."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, operation):
        def call(**params):
            raise self.error

        return call


def run(error: Exception) -> int:
    return main(["provision"], out=io.StringIO(), client_factory=lambda service, region: Refusing(error))


def client_error(code: str, message: str, operation: str = "CreateBucket") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def one_line(capsys) -> str:
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_unset_bucket_variable_is_one_line_naming_it(aws_env, monkeypatch, cli, capsys):
    monkeypatch.delenv("FRUITS_BUCKET")
    status, out = cli("provision", "--dry-run", dry_run_only=True)
    assert status == 2 and out == ""
    assert "environment variable FRUITS_BUCKET, which is not set; export it" in one_line(capsys)


def test_access_denied_names_the_call_and_exits_2(aws_env, capsys):
    status = run(client_error("AccessDenied", "User: arn:aws:iam::1:user/me is not authorized\nto perform s3:CreateBucket"))
    assert status == 2
    line = one_line(capsys)
    assert line.startswith("deploy: error: AWS call s3.create_bucket was refused: AccessDenied: User: arn:aws:iam::1:user/me")
    assert "docs/deploy.md" in line


def test_other_aws_errors_exit_1(aws_env, capsys):
    assert run(client_error("ThrottlingException", "Rate exceeded")) == 1
    assert "AWS call s3.create_bucket failed: ThrottlingException: Rate exceeded" in one_line(capsys)


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (NoCredentialsError(), 2, "no AWS credentials found"),
        (EndpointConnectionError(endpoint_url="https://s3.eu-west-3.amazonaws.com"), 1, "AWS endpoint not reachable"),
    ],
)
def test_credentials_and_network_problems_are_one_line(aws_env, capsys, error, status, words):
    assert run(error) == status
    assert words in one_line(capsys)
