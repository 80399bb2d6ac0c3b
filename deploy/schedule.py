"""`python -m deploy schedule`: runs start by themselves, when photos arrive and on a schedule.

What it creates (all AWS services, nothing of ours runs between runs):
- a Step Functions state machine (aws.schedule.state_machine) running the jobs of one deployment
  run (spark_args.jobs: one per stage, or the chain job) on the EMR Serverless application, each
  through the `startJobRun.sync` integration (Step Functions waits for the job run's end), with a
  Retry, then, for a weekly execution, the maintenance job (`python -m pipelines.maintain`);
- EventBridge rules starting it: S3 "Object Created" under the input prefix (the bucket sends its
  events to EventBridge), a daily catch-up and the weekly maintenance (aws.schedule.*);
- two least-privilege roles: the state machine's and EventBridge's (policies below, pure functions).

One run for a burst, never two at once: every execution first waits aws.schedule.debounce_seconds,
then lists the running executions of its state machine (ListExecutions, newest first): it runs its
jobs only once it is the oldest still running (no run overlaps an older one), and a photo
execution that is not the newest ends at once as superseded (the newest will run after it and
sees its photo too). Weekly maintenance executions are never superseded: they wait their turn.

A failed job run: Step Functions retries it (aws.schedule.stage_retries), then the execution fails
and the later jobs do not run. A quality gate failure (the job's exit code 1: see
pipelines/cli.py) is told from a crash by the job run's state details, which EMR Serverless fills
with the driver's exit code: "QualityGateFailed" or "StageFailed". That text is EMR's, not an API
field: when it differs, a gate failure is reported as StageFailed (docs/operations.md).
"""

from __future__ import annotations

import json

from deploy import iam, serverless
from deploy.executor import Executor
from deploy.settings import Settings
from deploy.spark_args import jobs

SYNC_JOB_RUN = "arn:aws:states:::emr-serverless:startJobRun.sync"
LIST_EXECUTIONS = "arn:aws:states:::aws-sdk:sfn:listExecutions"
# The rule Step Functions manages in the account to learn when a job run ends (.sync pattern).
SYNC_EVENTS_RULE = "StepFunctionsGetEventsForEMRServerlessJobRule"
STATES_POLICY_NAME = "fruits-run-jobs"
EVENTS_POLICY_NAME = "fruits-start-chain"
MAINTAIN_JOB = "maintain"


def _pascal(value):
    """The EMR Serverless request (camelCase keys) as the Step Functions integration takes it (PascalCase)."""
    if isinstance(value, dict):
        return {key[:1].upper() + key[1:]: _pascal(item) for key, item in value.items()}
    return value


def state_machine_arn(s: Settings, account: str) -> str:
    return f"arn:aws:states:{s.region}:{account}:stateMachine:{s.conf['aws.schedule.state_machine']}"


def _job_state(s: Settings, app_id: str, role_arn: str, job: str, next_state: str | None) -> dict:
    sched = s.conf["aws.schedule"]
    state = {
        "Type": "Task",
        "Resource": SYNC_JOB_RUN,
        "Parameters": _pascal(serverless.job_run_request(s, app_id, role_arn, job)),
        "ResultPath": f"$.jobs.{job}",
        "Retry": [{
            "ErrorEquals": ["States.ALL"], "IntervalSeconds": sched["retry_interval_seconds"],
            "MaxAttempts": sched["stage_retries"], "BackoffRate": 2.0,
        }],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "WhyFailed"}],
    }
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


def definition(s: Settings, app_id: str, job_role_arn: str, machine_arn: str) -> dict:
    """The state machine (Amazon States Language), a pure function of the settings and three ARNs."""
    sched = s.conf["aws.schedule"]
    chain = jobs(s)
    states: dict = {
        "Debounce": {"Type": "Wait", "Seconds": sched["debounce_seconds"], "Next": "ListRunning"},
        "ListRunning": {
            "Type": "Task",
            "Resource": LIST_EXECUTIONS,
            "Parameters": {"StateMachineArn": machine_arn, "StatusFilter": "RUNNING", "MaxResults": 100},
            "ResultSelector": {
                "me.$": "$$.Execution.Id",
                "newest.$": "States.ArrayGetItem($.Executions[*].ExecutionArn, 0)",
                "oldest.$": "States.ArrayGetItem($.Executions[*].ExecutionArn, States.MathAdd(States.ArrayLength($.Executions), -1))",
            },
            "ResultPath": "$.turn",
            "Next": "MyTurn",
        },
        "MyTurn": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.turn.oldest", "StringEqualsPath": "$.turn.me", "Next": chain[0]},
                {
                    "And": [
                        {"Variable": "$.maintain", "BooleanEquals": False},
                        {"Not": {"Variable": "$.turn.newest", "StringEqualsPath": "$.turn.me"}},
                    ],
                    "Next": "Superseded",
                },
            ],
            "Default": "WaitTurn",
        },
        "WaitTurn": {"Type": "Wait", "Seconds": sched["overlap_poll_seconds"], "Next": "ListRunning"},
        "Superseded": {"Type": "Succeed", "Comment": "a newer execution runs the jobs and sees these photos too"},
        "MaintenanceDue": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.maintain", "BooleanEquals": True, "Next": MAINTAIN_JOB}],
            "Default": "Done",
        },
        MAINTAIN_JOB: _job_state(s, app_id, job_role_arn, MAINTAIN_JOB, None),
        "Done": {"Type": "Succeed"},
        "WhyFailed": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.failure.Cause", "StringMatches": "*ExitCode: 1.*", "Next": "QualityGateFailed"}],
            "Default": "StageFailed",
        },
        "QualityGateFailed": {
            "Type": "Fail", "Error": "QualityGateFailed",
            "Cause": "a stage's quality gate failed (exit 1): nothing of it was published; see python -m quality.report",
        },
        "StageFailed": {
            "Type": "Fail", "Error": "StageFailed",
            "Cause": "a job run failed after its retries: python -m deploy logs --mode serverless",
        },
    }
    for job, following in zip(chain, [*chain[1:], "MaintenanceDue"]):
        states[job] = _job_state(s, app_id, job_role_arn, job, following)
    return {
        "Comment": "Fruits! chain on EMR Serverless: one run at a time, one per burst of photos (deploy/schedule.py)",
        "StartAt": "Debounce",
        "States": states,
    }


def states_policy(s: Settings, account: str, app_id: str, job_role_arn: str) -> dict:
    """The state machine's role: run and follow job runs of our application, pass the job role to
    EMR Serverless only, manage the .sync integration's own rule, list its own executions."""
    application = f"arn:aws:emr-serverless:{s.region}:{account}:/applications/{app_id}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "StartJobRuns", "Effect": "Allow", "Action": "emr-serverless:StartJobRun", "Resource": application},
            {
                "Sid": "FollowJobRuns", "Effect": "Allow",
                "Action": ["emr-serverless:GetJobRun", "emr-serverless:CancelJobRun"],
                "Resource": f"{application}/jobruns/*",
            },
            {
                "Sid": "SyncIntegrationRule", "Effect": "Allow",
                "Action": ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                "Resource": f"arn:aws:events:{s.region}:{account}:rule/{SYNC_EVENTS_RULE}",
            },
            {
                "Sid": "PassJobRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": job_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}},
            },
            {"Sid": "OneRunAtATime", "Effect": "Allow", "Action": "states:ListExecutions", "Resource": state_machine_arn(s, account)},
        ],
    }


def events_policy(s: Settings, account: str) -> dict:
    """EventBridge's role: start our state machine, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "StartChain", "Effect": "Allow", "Action": "states:StartExecution", "Resource": state_machine_arn(s, account)}
        ],
    }


def photos_pattern(s: Settings) -> dict:
    """S3 Object Created events of the bucket under the input prefix."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [s.bucket]}, "object": {"key": [{"prefix": f"{s.input_prefix}/"}]}},
    }


def _role(ex: Executor, name: str, service: str, account: str, policy_name: str, policy: dict) -> str:
    iam._ensure_role(ex, name, iam.trust_policy(service, account))
    ex.call("iam", "put_role_policy", RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
    return iam.role_arn(account, name)


def provision(ex: Executor, s: Settings) -> str:
    """Create or update everything above; returns the state machine's ARN."""
    sched = s.conf["aws.schedule"]
    account = iam.account_id(ex)
    app_id = serverless.ensure_application(ex, s)
    job_role = iam.role_arn(account, s.conf["aws.iam.serverless_job_role"])
    machine = state_machine_arn(s, account)
    states_role = _role(ex, sched["states_role"], "states.amazonaws.com", account, STATES_POLICY_NAME,
                        states_policy(s, account, app_id, job_role))
    events_role = _role(ex, sched["events_role"], "events.amazonaws.com", account, EVENTS_POLICY_NAME, events_policy(s, account))
    document = json.dumps(definition(s, app_id, job_role, machine))
    machines = ex.pages("stepfunctions", "list_state_machines", "stateMachines")
    if any(m["stateMachineArn"] == machine for m in machines):
        ex.call("stepfunctions", "update_state_machine", stateMachineArn=machine, definition=document, roleArn=states_role)
    else:
        ex.call(
            "stepfunctions", "create_state_machine", name=sched["state_machine"], definition=document,
            roleArn=states_role, type="STANDARD", tags=[{"key": "project", "value": "fruits"}],
        )
    ex.call("s3", "put_bucket_notification_configuration", Bucket=s.bucket,
            NotificationConfiguration={"EventBridgeConfiguration": {}})
    photo_input = {"InputPathsMap": {"key": "$.detail.object.key"},
                   "InputTemplate": '{"maintain": false, "trigger": "photo", "key": <key>}'}
    rules = [
        (sched["photos_rule"], {"EventPattern": json.dumps(photos_pattern(s))}, {"InputTransformer": photo_input}),
        (sched["chain_rule"], {"ScheduleExpression": sched["chain_schedule"]}, {"Input": '{"maintain": false, "trigger": "schedule"}'}),
        (sched["maintenance_rule"], {"ScheduleExpression": sched["maintenance_schedule"]}, {"Input": '{"maintain": true, "trigger": "maintenance"}'}),
    ]
    for name, trigger, payload in rules:
        ex.call("events", "put_rule", Name=name, State="ENABLED", Description="Fruits! chain (python -m deploy schedule)", **trigger)
        ex.call("events", "put_targets", Rule=name, Targets=[{"Id": "chain", "Arn": machine, "RoleArn": events_role, **payload}])
    ex.say(f"state machine {machine}: jobs {', '.join(jobs(s))} (+ {MAINTAIN_JOB} weekly) on application {app_id}; "
           f"started by {', '.join(name for name, _, _ in rules)}")
    return machine


def delete(ex: Executor, s: Settings) -> None:
    """Remove the rules, the state machine and the two roles (the bucket keeps sending events to
    EventBridge, where no rule matches them any more)."""
    sched = s.conf["aws.schedule"]
    account = iam.account_id(ex)
    gone = ("ResourceNotFoundException", "NoSuchEntity")
    for name in (sched["photos_rule"], sched["chain_rule"], sched["maintenance_rule"]):
        ex.call("events", "remove_targets", tolerate=gone, Rule=name, Ids=["chain"])
        ex.call("events", "delete_rule", tolerate=gone, Name=name)
    ex.call("stepfunctions", "delete_state_machine", stateMachineArn=state_machine_arn(s, account))
    for role, policy in ((sched["states_role"], STATES_POLICY_NAME), (sched["events_role"], EVENTS_POLICY_NAME)):
        ex.call("iam", "delete_role_policy", tolerate=gone, RoleName=role, PolicyName=policy)
        ex.call("iam", "delete_role", tolerate=gone, RoleName=role)
