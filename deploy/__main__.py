"""`python -m deploy COMMAND`: provision, package, run, schedule, status, logs, teardown on AWS; cost estimates;
the %%configure cell of an EMR Studio notebook.

Every command takes --conf/--set (default conf/aws.yaml), --region, --allow-non-eu and --dry-run
(print each AWS call with its parameters, make none). See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, TextIO

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from deploy import cluster, cost, iam, package, schedule, serverless, storage, studio
from deploy.executor import DeployError, Executor
from deploy.settings import DEFAULT_CONF, load_settings
from pipelines.config import ConfError


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", action="append", default=[], metavar="FILE", help=f"conf overlay (default {DEFAULT_CONF})")
    common.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    common.add_argument("--region", help="AWS region (default: aws.region from conf)")
    common.add_argument("--allow-non-eu", action="store_true", help="accept a region outside the EU (GDPR: justify it)")
    common.add_argument("--dry-run", action="store_true", help="print each AWS call with its parameters; make none")
    return common


def parser() -> argparse.ArgumentParser:
    common = _common_options()
    root = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("provision", parents=[common], help="bucket (EU, encrypted, private) and IAM roles")
    pack = commands.add_parser("package", parents=[common], help="build the code archive; upload code, env, dataset")
    pack.add_argument("--skip-env", action="store_true", help="do not upload the Python environment archive")
    pack.add_argument("--skip-data", action="store_true", help="do not upload the dataset")
    run = commands.add_parser("run", parents=[common], help="run bronze -> silver -> gold on EMR")
    run.add_argument("--mode", choices=["cluster", "serverless"], required=True)
    run.add_argument("--no-wait", action="store_true", help="submit and return without waiting for the end")
    sched = commands.add_parser(
        "schedule", parents=[common], help="start runs when photos arrive, daily, and maintenance weekly (Step Functions)"
    )
    sched.add_argument("--delete", action="store_true", help="remove the state machine, its rules and its roles")
    stat = commands.add_parser("status", parents=[common], help="clusters, application and recent runs")
    stat.add_argument("--mode", choices=["cluster", "serverless", "all"], default="all")
    log = commands.add_parser("logs", parents=[common], help="tails of the latest run's logs")
    log.add_argument("--mode", choices=["cluster", "serverless"], required=True)
    log.add_argument("--cluster-id", help="cluster to read (default: the newest named aws.cluster.name)")
    log.add_argument("--lines", type=int, default=40)
    down = commands.add_parser("teardown", parents=[common], help="terminate the cluster, delete the application")
    down.add_argument("--mode", choices=["cluster", "serverless", "all"], default="all")
    down.add_argument("--delete-bucket", action="store_true", help="ALSO empty and delete the bucket (lake included)")
    down.add_argument("--delete-roles", action="store_true", help="also delete the IAM roles and instance profile")
    note = commands.add_parser("studio", parents=[common], help="print the %%%%configure cell of an EMR Studio notebook")
    note.add_argument("--mode", choices=["cluster", "serverless"], required=True)
    price = commands.add_parser("cost", parents=[common], help="EMR on EC2 vs Serverless estimate for N images")
    price.add_argument("--images", type=int, nargs="+", help="image counts (default: aws.cost.images)")
    return root


def main(
    argv: list[str] | None = None,
    out: TextIO | None = None,
    client_factory: Callable[[str, str], Any] | None = None,
) -> int:
    """Exit status: 0 done, 1 a run or stage failed or AWS refused a call for another reason (throttling,
    a service error, a conflict: the line says which; retry), 2 a problem to fix (conf, permissions,
    credentials: the line says which and what to do)."""
    args = parser().parse_args(argv)
    out = out or sys.stdout
    ex = None
    if args.command == "cost":
        # FRUITS_BUCKET's absence stops the other commands; the cost model reads no bucket.
        os.environ.setdefault("FRUITS_BUCKET", cost.COST_ONLY_BUCKET)
    try:
        s = load_settings(args.conf, args.overrides, args.region, args.allow_non_eu)
        ex = Executor(s.region, args.dry_run, out, client_factory)
        return 0 if _dispatch(args, ex, s) else 1
    except (DeployError, ConfError) as exc:
        return _error(str(exc), 2)
    except ClientError as exc:
        return _aws_error(ex.last_call if ex else "", exc)
    except S3UploadFailedError as exc:  # boto3's upload_file wraps the ClientError of PutObject
        return _error(f"AWS call {ex.last_call if ex else 's3.upload_file'} failed: {exc}", 2 if "AccessDenied" in str(exc) else 1)
    except NoCredentialsError:
        return _error(
            "no AWS credentials found: export AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or run "
            "`aws sso login`; --dry-run needs none", 2
        )
    except EndpointConnectionError as exc:
        return _error(f"AWS endpoint not reachable ({exc}): check the network and aws.region, then retry", 1)


# Error codes meaning "the caller may not do this" or "these credentials are not valid": fix, not retry.
_PERMISSION_CODES = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "InvalidAccessKeyId", "AllAccessDisabled", "KMS.AccessDeniedException",
}


def _aws_error(call: str, exc: ClientError) -> int:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "Unknown"), " ".join(str(error.get("Message", "")).split())
    name = call or exc.operation_name
    if code in _PERMISSION_CODES:
        return _error(
            f"AWS call {name} was refused: {code}: {message}; the credentials in use lack this permission "
            f"(docs/deploy.md, 'Your own permissions') or have expired", 2
        )
    return _error(f"AWS call {name} failed: {code}: {message}; fix what it names, or retry if it is transient", 1)


def _error(line: str, status: int) -> int:
    print(f"deploy: error: {line}", file=sys.stderr)
    return status


def _dispatch(args: argparse.Namespace, ex: Executor, s) -> bool:
    if args.command == "provision":
        storage.provision_bucket(ex, s)
        arns = iam.provision_roles(ex, s)
        ex.say(f"bucket {s.uri('')} in {s.region}; roles: {', '.join(arns.values())}")
        if s.kms_key:
            ex.say(f"EMR security configuration {cluster.ensure_security_configuration(ex, s)}")
        else:
            ex.say("note: no customer KMS key (s3.encryption_key): no EMR security configuration; run --mode cluster will refuse")
    elif args.command == "package":
        package.package(ex, s, with_env=not args.skip_env, with_data=not args.skip_data)
    elif args.command == "run":
        return (cluster if args.mode == "cluster" else serverless).run(ex, s, wait=not args.no_wait)
    elif args.command == "schedule":
        schedule.delete(ex, s) if args.delete else schedule.provision(ex, s)
    elif args.command == "status":
        for module in _modules(args.mode):
            module.status(ex, s)
    elif args.command == "logs":
        if args.mode == "cluster":
            cluster.logs(ex, s, args.cluster_id, args.lines)
        else:
            serverless.logs(ex, s, args.lines)
    elif args.command == "teardown":
        for module in _modules(args.mode):
            module.teardown(ex, s)
        if args.delete_roles:
            iam.delete_roles(ex, s)
        if args.delete_bucket:
            storage.delete_bucket(ex, s)
    elif args.command == "studio":
        ex.say(studio.configure_cell(s, args.mode))
    elif args.command == "cost":
        ex.say(cost.estimate(s, args.images or s.conf["aws.cost.images"]))
    return True


def _modules(mode: str) -> list:
    return {"cluster": [cluster], "serverless": [serverless], "all": [cluster, serverless]}[mode]


if __name__ == "__main__":
    sys.exit(main())
