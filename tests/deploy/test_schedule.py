"""`deploy schedule` (deploy/schedule.py): the dry-run plan, every request checked against botocore's
models, the state machine's turn-taking rule evaluated on the executions it can meet, the two roles'
policies, and the whole command against moto (which stores what it is given: it shows the calls run
and fit together, not that AWS runs the state machine)."""

from __future__ import annotations

import io
import json

import boto3
import pytest

from deploy import schedule
from deploy.__main__ import main
from deploy.serverless import job_run_request
from tests.deploy.conftest import BUCKET, REGION
from tests.deploy.policy_eval import is_allowed
from tests.deploy.test_dry_run import _calls
from tests.deploy.test_request_models import Recording, validate

ACCOUNT = "123456789012"
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:fruits-chain"
JOB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-serverless-job"


@pytest.mark.parametrize("variant", [[], ["--set", "aws.one_application=true"]], ids=["per stage", "one application"])
def test_dry_run_plan_fits_the_service_models_and_makes_no_call(cli, variant):
    status, out = cli("schedule", *variant, "--dry-run", dry_run_only=True)
    assert status == 0, out
    calls = _calls(out)
    for name, params in calls:
        validate(*name.split(".", 1), params)
    names = [name for name, _ in calls]
    assert names.count("events.put_rule") == 3 and names.count("events.put_targets") == 3
    assert "stepfunctions.create_state_machine" in names and "s3.put_bucket_notification_configuration" in names
    machine = json.loads(dict(calls)["stepfunctions.create_state_machine"]["definition"])
    jobs = [n for n, st in machine["States"].items() if st.get("Resource") == schedule.SYNC_JOB_RUN]
    assert jobs == (["maintain", "chain"] if variant else ["maintain", "bronze", "silver", "gold", "catalog"])


def test_each_job_state_is_the_job_run_request_deploy_run_makes(settings):
    s = settings()
    machine = schedule.definition(s, "app-1", JOB_ROLE, MACHINE)
    bronze = machine["States"]["bronze"]["Parameters"]
    assert bronze["JobDriver"]["SparkSubmit"]["EntryPointArguments"] == job_run_request(s, "app-1", JOB_ROLE, "bronze")["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert set(bronze) == {"ApplicationId", "ExecutionRoleArn", "Name", "JobDriver", "ConfigurationOverrides", "ExecutionTimeoutMinutes"}
    assert machine["States"]["maintain"]["Parameters"]["JobDriver"]["SparkSubmit"]["EntryPointArguments"][:3] == ["maintain", "--conf", "conf/aws.yaml"]
    # every transition lands on a declared state, and the chain runs in aws.stages' order
    states = machine["States"]
    targets = {st.get("Next") for st in states.values()} | {c["Next"] for st in states.values() for c in st.get("Choices", [])}
    targets |= {c["Next"] for st in states.values() for c in st.get("Catch", [])} | {st.get("Default") for st in states.values()}
    assert targets - {None} <= set(states)
    assert [states[j]["Next"] for j in ("bronze", "silver", "gold", "catalog")] == ["silver", "gold", "catalog", "MaintenanceDue"]


def _choose(state: dict, data: dict) -> str:
    """Step Functions' Choice rule evaluation, for the operators the state machine uses."""

    def value(path):
        node = data
        for part in path.removeprefix("$.").split("."):
            node = node[part]
        return node

    def holds(rule):
        if "And" in rule:
            return all(holds(r) for r in rule["And"])
        if "Not" in rule:
            return not holds(rule["Not"])
        if "StringEqualsPath" in rule:
            return value(rule["Variable"]) == value(rule["StringEqualsPath"])
        if "BooleanEquals" in rule:
            return value(rule["Variable"]) is rule["BooleanEquals"]
        raise AssertionError(rule)

    return next((rule["Next"] for rule in state["Choices"] if holds(rule)), state["Default"])


@pytest.mark.parametrize(
    "running, me, maintain, expected",
    [
        (["a"], "a", False, "bronze"),  # alone: runs
        (["c", "b", "a"], "a", False, "bronze"),  # oldest: runs (the newer ones wait or end)
        (["c", "b", "a"], "b", False, "Superseded"),  # a photo of a burst: the newest covers it
        (["c", "b", "a"], "c", False, "WaitTurn"),  # newest, an older one still runs its jobs
        (["c", "b", "a"], "b", True, "WaitTurn"),  # weekly maintenance is never superseded
    ],
)
def test_one_run_per_burst_and_never_two_at_once(settings, running, me, maintain, expected):
    machine = schedule.definition(settings(), "app-1", JOB_ROLE, MACHINE)
    turn = {"me": me, "newest": running[0], "oldest": running[-1]}  # ListExecutions: newest first
    assert _choose(machine["States"]["MyTurn"], {"turn": turn, "maintain": maintain}) == expected


def test_a_failed_job_is_retried_then_stops_the_chain_as_gate_or_crash(settings):
    states = schedule.definition(settings(), "app-1", JOB_ROLE, MACHINE)["States"]
    assert states["silver"]["Retry"][0]["MaxAttempts"] == 1 and states["silver"]["Catch"][0]["Next"] == "WhyFailed"
    assert states["WhyFailed"]["Choices"][0]["Next"] == "QualityGateFailed" and states["WhyFailed"]["Default"] == "StageFailed"
    assert states["QualityGateFailed"]["Type"] == states["StageFailed"]["Type"] == "Fail"


def test_roles_may_do_their_part_and_nothing_else(settings):
    s = settings()
    states = schedule.states_policy(s, ACCOUNT, "app-1", JOB_ROLE)
    app = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/app-1"
    assert is_allowed(states, "emr-serverless:StartJobRun", app, {})
    assert not is_allowed(states, "emr-serverless:StartJobRun", app.replace("app-1", "other"), {})
    assert is_allowed(states, "emr-serverless:GetJobRun", f"{app}/jobruns/run-1", {})
    assert is_allowed(states, "iam:PassRole", JOB_ROLE, {"iam:PassedToService": "emr-serverless.amazonaws.com"})
    assert not is_allowed(states, "iam:PassRole", JOB_ROLE, {"iam:PassedToService": "ec2.amazonaws.com"})
    assert not is_allowed(states, "iam:PassRole", JOB_ROLE.replace("serverless-job", "ec2"), {"iam:PassedToService": "emr-serverless.amazonaws.com"})
    assert is_allowed(states, "states:ListExecutions", MACHINE, {})
    assert not is_allowed(states, "states:StartExecution", MACHINE, {})
    assert not any("*" == st["Resource"] for st in states["Statement"])
    events = schedule.events_policy(s, ACCOUNT)
    assert is_allowed(events, "states:StartExecution", MACHINE, {})
    assert not is_allowed(events, "states:StartExecution", MACHINE + "-other", {})
    assert not is_allowed(events, "states:ListExecutions", MACHINE, {})


def test_photos_rule_matches_objects_under_the_input_prefix_only(settings):
    s = settings()
    pattern = schedule.photos_pattern(s)
    assert pattern["detail"]["bucket"]["name"] == [BUCKET]
    assert pattern["detail"]["object"]["key"] == [{"prefix": f"{s.input_prefix}/"}]
    assert s.input_prefix == s.conf["input.path"].split(f"{BUCKET}/", 1)[1]


def test_schedule_against_moto_creates_then_updates_then_deletes(moto_aws):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    sets = ["--set", "aws.poll_seconds=0", "--set", "aws.serverless.release_label=emr-7.9.0"]
    for debounce in (300, 60):  # the second run, with another setting, updates what the first created
        out = io.StringIO()
        code = main(["schedule", *sets, "--set", f"aws.schedule.debounce_seconds={debounce}"], out=out, client_factory=Recording)
        assert code == 0, out.getvalue()
    assert "[aws] stepfunctions.update_state_machine" in out.getvalue()
    sfn, events = boto3.client("stepfunctions", region_name=REGION), boto3.client("events", region_name=REGION)
    (machine,) = sfn.list_state_machines()["stateMachines"]
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])
    assert definition["StartAt"] == "Debounce" and definition["States"]["Debounce"]["Seconds"] == 60
    rules = {r["Name"]: r for r in events.list_rules(NamePrefix="fruits-")["Rules"]}
    assert set(rules) == {"fruits-photos-arrived", "fruits-chain-daily", "fruits-maintenance-weekly"}
    assert json.loads(rules["fruits-photos-arrived"]["EventPattern"])["detail-type"] == ["Object Created"]
    target = events.list_targets_by_rule(Rule="fruits-maintenance-weekly")["Targets"][0]
    assert target["Arn"] == machine["stateMachineArn"] and json.loads(target["Input"])["maintain"] is True
    # (moto accepts the bucket's EventBridge notification but does not return it: the request is
    # checked against botocore's model, in the dry-run test and by the recording client here.)
    out = io.StringIO()
    assert main(["schedule", "--delete", *sets], out=out, client_factory=Recording) == 0, out.getvalue()
    assert sfn.list_state_machines()["stateMachines"] == [] and events.list_rules(NamePrefix="fruits-")["Rules"] == []
