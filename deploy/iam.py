"""IAM roles for EMR on EC2 and EMR Serverless, scoped to the deployment bucket and its prefixes.

Three roles:
- the EMR service role (EMR itself: instances, network), with AWS's managed v2 policy plus the
  right to pass our instance role to EC2 and nothing else;
- the EC2 instance role and its instance profile (what the jobs on the cluster run as);
- the EMR Serverless job role (what Serverless jobs run as).
The two job roles get the same data policy: read code and input, read-write lake and tmp, write logs,
and list only those prefixes; with bronze.retention_days set, also delete in input (expired photos). No statement on data has a wildcard resource: every object ARN is
under a prefix of the one bucket. Input is read-only, so a job cannot alter the source images.
With `catalog.glue` (conf/aws.yaml), the policy also lets the jobs register the lake's tables in
the AWS Glue Data Catalog: in the `catalog.database` and `catalog.notebook_database` databases only
(the lake's, and the walkthrough notebook's demonstration lake's), plus reading (and, on a fresh
account, creating) the `default` database, which Spark's Hive client opens when it starts.
"""

from __future__ import annotations

import json

from deploy.executor import Executor
from deploy.settings import Settings

DATA_POLICY_NAME = "fruits-data-access"
PASS_ROLE_POLICY_NAME = "fruits-pass-instance-role"


def trust_policy(service: str, account: str | None = None) -> dict:
    """Who may assume the role; with an account, only on behalf of that account (confused deputy)."""
    statement: dict = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    return {"Version": "2012-10-17", "Statement": [statement]}


GLUE_TABLE_ACTIONS = [
    "glue:GetDatabase", "glue:GetDatabases", "glue:CreateDatabase",
    "glue:GetTable", "glue:GetTables", "glue:CreateTable", "glue:UpdateTable", "glue:DeleteTable",
    "glue:GetPartition", "glue:GetPartitions", "glue:BatchGetPartition", "glue:GetUserDefinedFunctions",
]


def glue_statements(s: Settings, account: str) -> list[dict]:
    """Glue Data Catalog rights of the job roles: the lake's database (`catalog.database`) and the
    walkthrough notebook's (`catalog.notebook_database`, its demonstration lake's tables) and their
    tables, nothing else."""
    arn = lambda kind: f"arn:aws:glue:{s.conf['aws.region']}:{account}:{kind}"  # noqa: E731
    databases = list(dict.fromkeys([s.conf["catalog.database"], s.conf["catalog.notebook_database"]]))
    return [
        {
            "Sid": "CatalogLakeTables",
            "Effect": "Allow",
            "Action": GLUE_TABLE_ACTIONS,
            "Resource": [
                arn("catalog"),
                *(arn(f"{kind}/{database}{suffix}") for database in databases
                  for kind, suffix in (("database", ""), ("table", "/*"), ("userDefinedFunction", "/*"))),
            ],
        },
        {
            "Sid": "CatalogDefaultDatabase",
            "Effect": "Allow",
            "Action": ["glue:GetDatabase", "glue:CreateDatabase", "glue:GetUserDefinedFunctions"],
            "Resource": [arn("catalog"), arn("database/default"), arn("userDefinedFunction/default/*")],
        },
    ]


def data_policy(s: Settings, account: str) -> dict:
    """The job roles' policy: a pure function of the settings (a rehearsal loads its S3 statements into MinIO).

    S3A asks `getFileStatus(input/<prefix>)` (exists, mkdirs, listing a folder) as HEAD of the bare
    key `input/<prefix>`, then LIST of `input/<prefix>/`. S3 answers a HEAD of a missing key with
    404 only to a caller allowed s3:ListBucket, else with 403, which S3A does not treat as "not
    there": hence GetObject on each bare folder key too, and ListBucket for requests that carry no
    s3:prefix (a HEAD; a listing always carries one, "" for the bucket root, which stays refused).
    """
    objects = lambda *prefixes: [f"{s.bucket_arn}/{p}/*" for p in prefixes]  # noqa: E731
    read_write = (s.lake_prefix, s.tmp_prefix)
    listable = [pattern for p in s.object_prefixes() for pattern in (p, f"{p}/*")]
    statements = [
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": s.bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": listable}},
        },
        {
            "Sid": "NotFoundForMissingKeys",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": s.bucket_arn,
            "Condition": {"Null": {"s3:prefix": "true"}},
        },
        {
            "Sid": "HeadFolderKeys",  # read only: nothing is ever written at a folder's bare key
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"{s.bucket_arn}/{p}" for p in (s.code_prefix, s.input_prefix, *read_write)],
        },
        {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": s.bucket_arn},
        {
            "Sid": "ReadCodeAndInput",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": objects(s.code_prefix, s.input_prefix),
        },
        {
            "Sid": "ReadWriteLakeAndTmp",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": objects(*read_write),
        },
        {"Sid": "WriteLogs", "Effect": "Allow", "Action": "s3:PutObject", "Resource": objects(s.logs_prefix)},
    ]
    if s.weights_key and not s.weights_key.startswith(f"{s.code_prefix}/"):  # under code/: read already
        statements.append(
            {"Sid": "ReadModelWeights", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s.bucket_arn}/{s.weights_key}"}
        )
    if s.conf["bronze.retention_days"] is not None:
        # Retention erases expired photos at their source too (pipelines/maintain.py), or the next
        # run would ingest them again: delete, never write, in the input.
        statements.append(
            {"Sid": "ExpireInputPhotos", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": objects(s.input_prefix)}
        )
    if s.conf["catalog.glue"]:
        statements += glue_statements(s, account)
    if s.kms_key:
        statements.append(
            {
                "Sid": "UseBucketKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": s.kms_key,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def role_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def pass_role_policy(s: Settings, account: str) -> dict:
    """The service role may hand our instance role to EC2, and no other role to anything.

    With a customer KMS key, it may also use that key for the EBS volumes it creates for the cluster
    (the security configuration encrypts them with it): grants only for AWS resources.
    """
    statements: list[dict] = [
        {
            "Sid": "PassInstanceRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": role_arn(account, s.conf["aws.iam.ec2_role"]),
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        }
    ]
    if s.kms_key:
        statements += [
            {
                "Sid": "EncryptClusterVolumes",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                "Resource": s.kms_key,
            },
            {
                "Sid": "GrantKeyToEc2Volumes",
                "Effect": "Allow",
                "Action": "kms:CreateGrant",
                "Resource": s.kms_key,
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def account_id(ex: Executor) -> str:
    return ex.call("sts", "get_caller_identity")["Account"]


def provision_roles(ex: Executor, s: Settings) -> dict[str, str]:
    """Create or update the three roles; returns their ARNs by conf key."""
    account = account_id(ex)
    iam = s.conf["aws.iam"]
    data = json.dumps(data_policy(s, account))

    _ensure_role(ex, iam["emr_service_role"], trust_policy("elasticmapreduce.amazonaws.com", account))
    ex.call("iam", "attach_role_policy", RoleName=iam["emr_service_role"], PolicyArn=iam["emr_service_policy_arn"])
    ex.call(
        "iam",
        "put_role_policy",
        RoleName=iam["emr_service_role"],
        PolicyName=PASS_ROLE_POLICY_NAME,
        PolicyDocument=json.dumps(pass_role_policy(s, account)),
    )

    _ensure_role(ex, iam["ec2_role"], trust_policy("ec2.amazonaws.com"))
    ex.call("iam", "put_role_policy", RoleName=iam["ec2_role"], PolicyName=DATA_POLICY_NAME, PolicyDocument=data)
    ex.call("iam", "create_instance_profile", tolerate=("EntityAlreadyExists",), InstanceProfileName=iam["ec2_role"])
    ex.call(
        "iam",
        "add_role_to_instance_profile",
        tolerate=("LimitExceeded",),  # the profile already holds its one role
        InstanceProfileName=iam["ec2_role"],
        RoleName=iam["ec2_role"],
    )

    _ensure_role(ex, iam["serverless_job_role"], trust_policy("emr-serverless.amazonaws.com", account))
    ex.call(
        "iam", "put_role_policy", RoleName=iam["serverless_job_role"], PolicyName=DATA_POLICY_NAME, PolicyDocument=data
    )
    return {key: role_arn(account, iam[key]) for key in ("emr_service_role", "ec2_role", "serverless_job_role")}


def _ensure_role(ex: Executor, name: str, trust: dict) -> None:
    document = json.dumps(trust)
    created = ex.call(
        "iam",
        "create_role",
        tolerate=("EntityAlreadyExists",),
        RoleName=name,
        AssumeRolePolicyDocument=document,
        Description="Fruits! pipeline on EMR (python -m deploy provision)",
    )
    if created is None:  # already there: make its trust policy ours again
        ex.call("iam", "update_assume_role_policy", RoleName=name, PolicyDocument=document)


def delete_roles(ex: Executor, s: Settings) -> None:
    """Remove the three roles and the instance profile (teardown --delete-roles)."""
    iam = s.conf["aws.iam"]
    gone = ("NoSuchEntity",)
    ex.call("iam", "detach_role_policy", tolerate=gone, RoleName=iam["emr_service_role"], PolicyArn=iam["emr_service_policy_arn"])
    ex.call("iam", "delete_role_policy", tolerate=gone, RoleName=iam["emr_service_role"], PolicyName=PASS_ROLE_POLICY_NAME)
    ex.call(
        "iam",
        "remove_role_from_instance_profile",
        tolerate=gone,
        InstanceProfileName=iam["ec2_role"],
        RoleName=iam["ec2_role"],
    )
    ex.call("iam", "delete_instance_profile", tolerate=gone, InstanceProfileName=iam["ec2_role"])
    for role in (iam["ec2_role"], iam["serverless_job_role"]):
        ex.call("iam", "delete_role_policy", tolerate=gone, RoleName=role, PolicyName=DATA_POLICY_NAME)
    for role in (iam["emr_service_role"], iam["ec2_role"], iam["serverless_job_role"]):
        ex.call("iam", "delete_role", tolerate=gone, RoleName=role)
