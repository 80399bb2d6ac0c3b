"""Deployment settings read from conf and checked once, before any AWS call.

Everything the deploy commands need (region, bucket, prefixes, encryption) is derived here from
the same conf the jobs read, so the tool and the jobs cannot disagree on where the data lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from pathlib import Path

from deploy.executor import DeployError
from pipelines import stages
from pipelines.config import CONF_DIR, PROJECT_ROOT, Conf, load_conf

DEFAULT_CONF = "conf/aws.yaml"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Server-side encryption names: S3A's (conf s3.encryption_algorithm) -> the S3 API's.
_SSE_HEADER = {"SSE-S3": "AES256", "SSE-KMS": "aws:kms"}
# A KMS key named by its ARN, as S3 reports it on objects (an alias ARN is not the key's ARN).
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?!.*:alias/)\S+$")


@dataclass(frozen=True)
class Settings:
    conf: Conf
    region: str
    bucket: str
    sse: str  # value of the x-amz-server-side-encryption header: AES256 or aws:kms
    kms_key: str | None  # customer KMS key; None: S3's default key for the algorithm
    code_prefix: str
    logs_prefix: str
    tmp_prefix: str
    input_prefix: str
    lake_prefix: str
    # The conf the deploy tool loaded, forwarded to every stage so the jobs load the same: the
    # --conf files (paths inside conf/, which travels in the code archive) and the --set overrides
    # (--region's included), in order.
    job_conf_files: tuple[str, ...] = (DEFAULT_CONF,)
    job_overrides: tuple[str, ...] = ()
    # Key of the MobileNetV2 weights the driver reads (silver.weights_file, an s3a:// object of the
    # bucket), uploaded by package; None when silver.weights_file is not in S3.
    weights_key: str | None = None

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def staging_prefix(self) -> str:
        """Write-audit-publish staging tables: temporary data inside the lake."""
        return f"{self.lake_prefix}/{self.conf['lake.staging']}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def code_key(self, name: str) -> str:
        return f"{self.code_prefix}/{name}"

    def object_prefixes(self) -> list[str]:
        """Every prefix the jobs touch, for IAM and for ListBucket conditions."""
        return [self.code_prefix, self.input_prefix, self.lake_prefix, self.tmp_prefix, self.logs_prefix]


def load_settings(
    conf_files: Iterable[str] = (),
    overrides: Iterable[str] = (),
    region: str | None = None,
    allow_non_eu: bool = False,
) -> Settings:
    """Conf (default conf/aws.yaml) plus `--region`, validated for a deployment."""
    overrides = list(overrides)
    if region:
        overrides += [f"aws.region={region}", f"s3.region={region}"]
    conf = load_conf(list(conf_files) or [DEFAULT_CONF], overrides)
    return settings_from_conf(conf, allow_non_eu)


def settings_from_conf(conf: Conf, allow_non_eu: bool = False) -> Settings:
    region = conf["aws.region"]
    if region not in conf["aws.eu_regions"] and not allow_non_eu:
        raise DeployError(
            f"aws.region '{region}' is not an EU region (aws.eu_regions: {', '.join(conf['aws.eu_regions'])}); "
            f"GDPR: keep the images in the EU, or pass --allow-non-eu if a legal basis covers the transfer"
        )
    if conf["s3.region"] and conf["s3.region"] != region:
        raise DeployError(
            f"s3.region '{conf['s3.region']}' differs from aws.region '{region}': the jobs would look for the "
            f"bucket in another region; set both to the same value (or pass --region)"
        )
    bucket = conf["aws.bucket"]
    if not _BUCKET_NAME.match(bucket or "") or ".." in bucket:
        raise DeployError(
            f"aws.bucket '{bucket}' is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens); "
            f"export FRUITS_BUCKET=<your-bucket> or set aws.bucket in conf/aws.yaml"
        )
    if problem := stages.order_problem(conf["aws.stages"]):
        raise DeployError(f"aws.stages: {problem} (pipelines/stages.py declares the chain); fix aws.stages in conf")
    algorithm = conf["s3.encryption_algorithm"]
    if algorithm not in _SSE_HEADER:
        raise DeployError(
            f"s3.encryption_algorithm is {algorithm!r}; on AWS it must be SSE-S3 or SSE-KMS (GDPR: encryption "
            f"at rest, and the bucket policy refuses unencrypted uploads); set it in conf/aws.yaml"
        )
    kms_key = conf["s3.encryption_key"] if algorithm == "SSE-KMS" else None
    if kms_key and not _KMS_KEY_ARN.match(kms_key):
        raise DeployError(
            f"s3.encryption_key is '{kms_key}': give the key's ARN (arn:aws:kms:<region>:<account>:key/<id>), "
            f"not an alias or a bare key id. S3 reports an object's key by its ARN, S3A repeats it on every "
            f"copy (each rename of a Spark or Hadoop commit), and the bucket policy compares it with this value"
        )
    return Settings(
        conf=conf,
        region=region,
        bucket=bucket,
        sse=_SSE_HEADER[algorithm],
        kms_key=kms_key,
        code_prefix=_clean_prefix(conf, "aws.prefixes.code"),
        logs_prefix=_clean_prefix(conf, "aws.prefixes.logs"),
        tmp_prefix=_clean_prefix(conf, "aws.prefixes.tmp"),
        input_prefix=_prefix_in_bucket(conf, "input.path", bucket),
        lake_prefix=_prefix_in_bucket(conf, "lake.root", bucket),
        weights_key=_prefix_in_bucket(conf, "silver.weights_file", bucket) if "://" in conf["silver.weights_file"] else None,
        job_conf_files=tuple(_conf_in_archive(f) for f in conf.sources[1:] if not f.startswith("--set ")),
        job_overrides=tuple(f[len("--set ") :] for f in conf.sources if f.startswith("--set ")),
    )


def _conf_in_archive(file: str) -> str:
    """The path, relative to the project, under which a --conf file travels in the code archive."""
    path = Path(file)
    if not path.is_absolute() and not path.exists():  # as pipelines.config.load_conf finds it
        path = PROJECT_ROOT / path
    path = path.resolve()
    if not path.is_relative_to(CONF_DIR):
        raise DeployError(
            f"--conf {file} is outside the project's conf/ folder ({CONF_DIR}): the jobs on EMR read their conf "
            f"from the code archive, which holds conf/ only; move the file into conf/ and pass it from there"
        )
    return path.relative_to(PROJECT_ROOT).as_posix()


def _clean_prefix(conf: Conf, key: str) -> str:
    prefix = conf[key].strip("/")
    if not prefix:
        raise DeployError(f"{key} is empty; give a folder name such as '{key.rsplit('.', 1)[-1]}'")
    return prefix


def _prefix_in_bucket(conf: Conf, key: str, bucket: str) -> str:
    """The key prefix of an s3a:// location that must lie in the deployment bucket."""
    location = conf[key].rstrip("/")
    head = f"s3a://{bucket}/"
    if not location.startswith(head) or len(location) == len(head):
        raise DeployError(
            f"{key} is '{location}', not a folder of the deployment bucket (expected {head}<folder>); "
            f"the jobs and the IAM policies must agree on the bucket: fix {key} or aws.bucket in conf/aws.yaml"
        )
    return location[len(head) :]
