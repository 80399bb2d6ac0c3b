"""The cost model: linear lines, break-even where they cross, measured throughput when present."""

from __future__ import annotations

import json

import pytest

from deploy import cost
from deploy.executor import DeployError


@pytest.fixture
def model(settings, tmp_path):
    """Settings without benchmark file, and the price table of conf/pricing.yaml."""

    def make(*overrides):
        s = settings(f"aws.cost.benchmark_file={tmp_path / 'none.json'}", *overrides)
        return s, cost.prices(s)

    return make


def test_cluster_cost_by_hand(model):
    s, prices = model("aws.cost.images_per_s_per_vcpu=10", "aws.cost.chain_factor=1.25")
    line = cost.cluster_line(s, prices, 10.0, spot=False)
    hourly = 3 * (0.224 + 0.056)  # master + 2 core m5.xlarge, EC2 + EMR
    fixed_hours = (8 + 4 * 1.5) / 60  # start-up + 4 steps' start-up (bronze, silver, gold, catalog)
    work_hours = 1_000_000 * 1.25 / 10 / 3600 / 8  # vCPU-hours over 8 worker vCPUs
    assert line.hours(1_000_000) == pytest.approx(fixed_hours + work_hours)
    assert line.usd(1_000_000) == pytest.approx(hourly * (fixed_hours + work_hours))


def test_spot_prices_only_the_workers(model):
    s, prices = model()
    on_demand, spot = cost.cluster_line(s, prices, 10.0, False), cost.cluster_line(s, prices, 10.0, True)
    assert on_demand.fixed_hours == spot.fixed_hours
    assert spot.usd_per_image / on_demand.usd_per_image == pytest.approx((0.280 + 2 * (0.090 + 0.056)) / (3 * 0.280))


def test_serverless_cost_by_hand(model):
    s, prices = model()
    line = cost.serverless_line(s, prices, 10.0)
    hourly = (2 * 0.0619 + 8 * 0.0068) + 2 * (4 * 0.0619 + 16 * 0.0068)  # driver + 2 executors
    work_hours = 100_000 * 1.25 / 10 / 3600 / 8
    assert line.usd(100_000) == pytest.approx(hourly * (4 * 1.5 / 60 + work_hours))


def test_warm_capacity_costs_its_idle_time(model):
    s, prices = model("aws.serverless.initial_capacity.executors=2")
    cold = cost.serverless_line(model()[0], prices, 10.0)
    warm = cost.serverless_line(s, prices, 10.0)
    assert warm.fixed_usd - cold.fixed_usd == pytest.approx(2 * (4 * 0.0619 + 16 * 0.0068) * 15 / 60)
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


def test_table_and_recommendation(cli, tmp_path):
    status, out = cli("cost", "--set", f"aws.cost.benchmark_file={tmp_path / 'none.json'}")
    assert status == 0
    for row in ("|    10,000 |", "|   100,000 |", "| 1,000,000 |"):
        assert row in out
    assert "Break-even EMR Serverless vs EMR on EC2, spot workers" in out
    assert out.count("Recommendation:") == 1


def test_unpriced_instance_type_is_named(model):
    s, prices = model("aws.cluster.core.instance_type=x9.huge")
    with pytest.raises(DeployError, match="aws.cluster.core.instance_type is x9.huge"):
        cost.cluster_line(s, prices, 10.0, False)
