"""The deploy tests' fixtures (fake credentials, Settings from conf/aws.yaml) serve here too."""

from tests.deploy.conftest import aws_env, settings  # noqa: F401  (fixtures)
