"""The cost model: linear lines, break-even where they cross, measured throughput when present."""

from __future__ import annotations

import json

import pytest
import yaml

from deploy import cost
from deploy.executor import DeployError


# A price table and cluster/serverless shapes made for these tests, so that the expected figures
# below are computed from these numbers and not from copies of conf/pricing.yaml or conf/aws.yaml.
PRICES = {
    "instances": {
        "t.worker": {"vcpu": 4, "memory_gb": 16, "ec2_on_demand": 0.20, "ec2_spot": 0.08, "emr": 0.05},
        "t.master": {"vcpu": 2, "memory_gb": 8, "ec2_on_demand": 0.10, "ec2_spot": 0.04, "emr": 0.02},
    },
    "serverless": {"X86_64": {"vcpu_hour": 0.06, "gb_hour": 0.007, "storage_gb_hour": 0.0001}},
}
SHAPE = (
    "aws.stages=[bronze, silver, gold]",
    "aws.cost.images_per_s_per_vcpu=10", "aws.cost.chain_factor=1.25",
    "aws.cost.cluster_startup_minutes=8", "aws.cost.serverless_job_startup_minutes=1.5", "aws.cost.step_startup_minutes=1.5",
    "aws.cluster.keep_alive=false",
    "aws.cluster.master.instance_type=t.master", "aws.cluster.master.count=1",
    "aws.cluster.core.instance_type=t.worker", "aws.cluster.core.count=2",
    "aws.cluster.task.instance_type=t.worker", "aws.cluster.task.count=0",
    "aws.serverless.architecture=X86_64", "aws.serverless.max_executors=2",
    "aws.serverless.driver={cpu: 2, memory_gb: 8, disk_gb: 20}",
    "aws.serverless.executor={cpu: 4, memory_gb: 16, disk_gb: 20}",
    "aws.serverless.initial_capacity={drivers: 0, executors: 0}", "aws.serverless.auto_stop_idle_minutes=15",
)
MASTER_HOUR, WORKER_HOUR, WORKER_SPOT_HOUR = 0.10 + 0.02, 0.20 + 0.05, 0.08 + 0.05
FIXED_HOURS = (8 + 3 * 1.5) / 60  # cluster start-up + 3 stages' start-up
DRIVER_HOUR, EXECUTOR_HOUR = 2 * 0.06 + 8 * 0.007, 4 * 0.06 + 16 * 0.007


@pytest.fixture
def fixed_prices(region, tmp_path):
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump({"regions": {region: PRICES}}), encoding="utf-8")
    return f"aws.cost.pricing_file={path}"


@pytest.fixture
def region(settings):
    return settings().region


@pytest.fixture
def model(settings, tmp_path, fixed_prices):
    """Settings with the test's price table and shapes, without benchmark file."""

    def make(*overrides):
        s = settings(f"aws.cost.benchmark_file={tmp_path / 'none.json'}", fixed_prices, *SHAPE, *overrides)
        return s, cost.prices(s)

    return make


def test_cluster_cost_by_hand(model):
    s, prices = model()
    line = cost.cluster_line(s, prices, 10.0, spot=False)
    hourly = MASTER_HOUR + 2 * WORKER_HOUR
    work_hours = 1_000_000 * 1.25 / 10 / 3600 / 8  # vCPU-hours over 2 x 4 worker vCPUs
    assert line.hours(1_000_000) == pytest.approx(FIXED_HOURS + work_hours)
    assert line.usd(1_000_000) == pytest.approx(hourly * (FIXED_HOURS + work_hours))


def test_spot_line_prices_the_groups_the_conf_puts_on_spot(model):
    """Core nodes stay on demand (the conf calls spot core nodes unsafe); spot task nodes at the spot price."""
    s, prices = model("aws.cluster.core.count=1", "aws.cluster.task.count=1")  # task.spot is true in base.yaml
    on_demand, spot = cost.cluster_line(s, prices, 10.0, False), cost.cluster_line(s, prices, 10.0, True)
    assert on_demand.fixed_hours == spot.fixed_hours and spot.name == "EMR on EC2, spot task nodes"
    assert spot.usd_per_image / on_demand.usd_per_image == pytest.approx(
        (MASTER_HOUR + WORKER_HOUR + WORKER_SPOT_HOUR) / (MASTER_HOUR + 2 * WORKER_HOUR)
    )
    s, prices = model("aws.cluster.core.spot=true")  # spot core nodes only when the conf says so
    assert cost.cluster_line(s, prices, 10.0, True).usd_per_image / on_demand.usd_per_image == pytest.approx(
        (MASTER_HOUR + 2 * WORKER_SPOT_HOUR) / (MASTER_HOUR + 2 * WORKER_HOUR)
    )


def test_without_spot_nodes_there_is_no_spot_line(cli, tmp_path, fixed_prices):
    status, out = cli(
        "cost", "--set", f"aws.cost.benchmark_file={tmp_path / 'none.json'}", "--set", fixed_prices,
        *(a for o in SHAPE for a in ("--set", o)),
    )  # fmt: skip
    assert status == 0, out
    header = next(line for line in out.splitlines() if line.startswith("|    images"))
    assert "spot" not in header  # on-demand and Serverless only
    assert "No spot line: no worker group with nodes is on spot" in out


def test_serverless_cost_by_hand(model):
    s, prices = model()
    line = cost.serverless_line(s, prices, 10.0)
    hourly = DRIVER_HOUR + 2 * EXECUTOR_HOUR
    work_hours = 100_000 * 1.25 / 10 / 3600 / 8
    assert line.usd(100_000) == pytest.approx(hourly * (3 * 1.5 / 60 + work_hours))


def test_warm_capacity_costs_its_idle_time(model):
    s, prices = model("aws.serverless.initial_capacity.executors=2")
    cold = cost.serverless_line(model()[0], prices, 10.0)
    warm = cost.serverless_line(s, prices, 10.0)
    assert warm.fixed_usd - cold.fixed_usd == pytest.approx(2 * EXECUTOR_HOUR * 15 / 60)
    assert warm.usd_per_image == cold.usd_per_image


def test_break_even_is_where_costs_are_equal(model):
    s, prices = model()
    serverless = cost.serverless_line(s, prices, 10.0)
    for spot in (False, True):
        cluster = cost.cluster_line(s, prices, 10.0, spot)
        point = cost.break_even(serverless, cluster)
        assert point is not None and point > 0
        assert serverless.usd(point) == pytest.approx(cluster.usd(point))
        assert serverless.usd(point / 2) < cluster.usd(point / 2)  # serverless cheaper below
        assert serverless.usd(point * 2) > cluster.usd(point * 2)  # the cluster cheaper above


# One on-demand core node and one spot task node: the same 8 worker vCPUs as SHAPE's two core nodes.
MIXED = ("aws.cluster.core.count=1", "aws.cluster.task.count=1")


def by_hand_break_even_vs_spot() -> float:
    """Images where serverless and the cluster of MIXED cost the same, from the test's prices alone."""
    per_image_hours = 1.25 / 10 / 3600 / 8
    serverless_hourly, spot_hourly = DRIVER_HOUR + 2 * EXECUTOR_HOUR, MASTER_HOUR + WORKER_HOUR + WORKER_SPOT_HOUR
    serverless_fixed, spot_fixed = serverless_hourly * 3 * 1.5 / 60, spot_hourly * FIXED_HOURS
    return (spot_fixed - serverless_fixed) / ((serverless_hourly - spot_hourly) * per_image_hours)


def test_recommendation_names_the_cheapest_mode_on_each_side_of_the_break_even(cli, tmp_path, fixed_prices):
    point = by_hand_break_even_vs_spot()
    small, large = int(point / 10), int(point * 10)
    status, out = cli(
        "cost", "--set", f"aws.cost.benchmark_file={tmp_path / 'none.json'}", "--set", fixed_prices,
        *(a for o in (*SHAPE, *MIXED, f"aws.cost.images=[{small}, {large}]") for a in ("--set", o)),
    )
    assert status == 0, out
    cells = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    rows = {c[1].strip(): c[-1].strip() for c in cells if c[1].strip().replace(",", "").isdigit()}
    assert rows == {f"{small:,}": "EMR Serverless", f"{large:,}": "EMR on EC2, spot task nodes"}
    recommendation = [line for line in out.splitlines() if line.startswith("Recommendation:")]
    assert recommendation == [
        f"Recommendation: EMR Serverless up to about {point:,.0f} images per run, EMR on EC2, spot task nodes above "
        "(fall back to EMR on EC2, on-demand when spot capacity is short)."
    ]


def test_no_break_even_when_one_option_always_wins():
    cheap = cost.Line("a", fixed_usd=1, usd_per_image=1e-6, fixed_hours=0, hours_per_image=0)
    dear = cost.Line("b", fixed_usd=2, usd_per_image=2e-6, fixed_hours=0, hours_per_image=0)
    assert cost.break_even(cheap, dear) is None
    assert cost.break_even(cheap, cheap) is None


def test_throughput_read_from_the_benchmark(settings, tmp_path):
    bench = tmp_path / "latest.json"
    bench.write_text(json.dumps({"silver": {"images_per_s_per_vcpu": 25.5}}))
    rate, source = cost.throughput(settings(f"aws.cost.benchmark_file={bench}"))
    assert rate == 25.5 and "measured" in source
    bench.write_text(json.dumps({"limit": {}}))
    fallback = settings(f"aws.cost.benchmark_file={bench}")
    assert cost.throughput(fallback)[0] == fallback.conf["aws.cost.images_per_s_per_vcpu"]


def test_faster_measured_throughput_lowers_the_variable_cost(model):
    s, prices = model()
    assert cost.cluster_line(s, prices, 20.0, False).usd_per_image == pytest.approx(
        cost.cluster_line(s, prices, 10.0, False).usd_per_image / 2
    )


def test_unpriced_instance_type_is_named(model):
    s, prices = model("aws.cluster.core.instance_type=x9.huge")
    with pytest.raises(DeployError, match="aws.cluster.core.instance_type is x9.huge"):
        cost.cluster_line(s, prices, 10.0, False)


def test_one_application_pays_one_start_up_per_run_and_the_saving_is_printed(model, cli, tmp_path, fixed_prices):
    """aws.one_application: one job (step or job run) per run, whatever the number of stages."""
    per_stage, prices = model("aws.cost.step_startup_minutes=1.0")
    one, _ = model("aws.cost.step_startup_minutes=1.0", "aws.one_application=true")
    assert cost.cluster_line(per_stage, prices, 10.0, False).fixed_hours == pytest.approx((8 + 3 * 1.0) / 60)
    assert cost.cluster_line(one, prices, 10.0, False).fixed_hours == pytest.approx((8 + 1 * 1.0) / 60)
    assert cost.serverless_line(per_stage, prices, 10.0).fixed_hours == pytest.approx(3 * 1.5 / 60)
    assert cost.serverless_line(one, prices, 10.0).fixed_hours == pytest.approx(1.5 / 60)
    saved = (3 - 1) * 1.5 / 60 * (DRIVER_HOUR + 2 * EXECUTOR_HOUR)
    status, out = cli(
        "cost", "--set", f"aws.cost.benchmark_file={tmp_path / 'none.json'}", "--set", fixed_prices,
        *(a for o in SHAPE for a in ("--set", o)), "--set", "aws.one_application=true",
    )  # fmt: skip
    assert status == 0, out
    assert "jobs per run: 1 (chain: bronze, silver, gold in one Spark application" in out
    assert (
        f"One application per run (aws.one_application) saves, against one job per stage: EMR Serverless: "
        f"3.0 billed min of start-up, ${saved:,.2f} per run; EMR on EC2, on-demand: 3.0 billed min of start-up"
    ) in out


def test_cost_needs_no_bucket_but_the_aws_commands_still_do(cli, monkeypatch, tmp_path, fixed_prices):
    """`make deploy-cost` works before any bucket is chosen; `deploy run` still stops on the unset name."""
    monkeypatch.delenv("FRUITS_BUCKET")
    status, out = cli(
        "cost", "--set", f"aws.cost.benchmark_file={tmp_path / 'none.json'}", "--set", fixed_prices,
        *(a for o in SHAPE for a in ("--set", o)),
    )  # fmt: skip
    assert status == 0, out
    assert "Recommendation:" in out
    monkeypatch.delenv("FRUITS_BUCKET", raising=False)  # the cost command set its stand-in for this process
    status, out = cli("run", "--mode", "serverless", "--dry-run", dry_run_only=True)
    assert status == 2
