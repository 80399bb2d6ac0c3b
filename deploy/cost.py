"""Cost of one chain run for N images: EMR on EC2 (on-demand; spot groups as configured) against EMR Serverless.

Prices: conf/pricing.yaml (aws.cost.pricing_file), which names the source page and date of each figure.

Every option costs `fixed + per_image * N` (docs/cost.md):
- the work is N * chain_factor / throughput vCPU-seconds, throughput being images/s per vCPU
  measured by the benchmark (bench/results/latest.json) or, until there is one, conf's default;
- a cluster bills all its nodes (master included) from start-up to termination: start-up, each
  step's Spark start-up and idle minutes are the fixed part, the work spread over the workers'
  vCPUs the variable part;
- Serverless bills the driver and executors per vCPU-hour and GB-hour while a job runs: each job
  run's start-up is fixed, the work spread over the executors variable; warm (pre-initialised)
  workers add their idle time before auto-stop.
A run is one job (step or job run) per stage, or one for the whole chain with aws.one_application
(spark_args.jobs); the estimate prints what the other choice would cost.
Both lines being straight, the break-even is where they cross.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.executor import DeployError
from deploy.settings import Settings
from deploy.spark_args import jobs
from pipelines.config import resolve_location

BENCH_KEY = ("silver", "images_per_s_per_vcpu")
SERVERLESS_FREE_DISK_GB = 20
# The bucket name the cost model's callers load conf/aws.yaml with when FRUITS_BUCKET is unset: the
# model reads no bucket, but the conf builds every location from it (never used: no AWS call).
COST_ONLY_BUCKET = "cost-model-only"


@dataclass(frozen=True)
class Line:
    """Cost in USD and billed hours of one option, as straight lines in the number of images."""

    name: str
    fixed_usd: float
    usd_per_image: float
    fixed_hours: float
    hours_per_image: float

    def usd(self, images: int) -> float:
        return self.fixed_usd + self.usd_per_image * images

    def hours(self, images: int) -> float:
        return self.fixed_hours + self.hours_per_image * images


def throughput(s: Settings) -> tuple[float, str]:
    """Images/s per vCPU and where it comes from: the benchmark's result when there is one."""
    path = Path(resolve_location(s.conf["aws.cost.benchmark_file"]))
    if path.is_file():
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
            for key in BENCH_KEY:
                value = value[key]
        except (ValueError, KeyError, TypeError):
            value = None
        if isinstance(value, (int, float)) and value > 0:
            return float(value), f"measured ({path.name}: {'.'.join(BENCH_KEY)})"
    return s.conf["aws.cost.images_per_s_per_vcpu"], "conf default aws.cost.images_per_s_per_vcpu (no benchmark result)"


def prices(s: Settings) -> dict:
    path = Path(resolve_location(s.conf["aws.cost.pricing_file"]))
    table = yaml.safe_load(path.read_text(encoding="utf-8"))["regions"]
    if s.region not in table:
        raise DeployError(
            f"{path.name} has no prices for aws.region '{s.region}' (it has {', '.join(table)}); "
            f"add them from the pricing pages named at the top of the file"
        )
    return table[s.region]


def _instance(region_prices: dict, instance_type: str, key: str) -> dict:
    if instance_type not in region_prices["instances"]:
        raise DeployError(f"{key} is {instance_type}, which conf/pricing.yaml does not price; add it there")
    return region_prices["instances"][instance_type]


def spot_groups(conf) -> list[str]:
    """Worker groups the conf puts on spot (aws.cluster.<role>.spot) that have nodes."""
    return [role for role in ("core", "task") if conf[f"aws.cluster.{role}.count"] and conf[f"aws.cluster.{role}.spot"]]


def cluster_line(s: Settings, region_prices: dict, images_per_s_per_vcpu: float, spot: bool) -> Line:
    """spot=False: every node on demand (the fallback when spot capacity is short); spot=True: the
    groups the conf puts on spot (by default the task nodes only) at the spot price, as deployed."""
    conf = s.conf
    hourly = 0.0
    worker_vcpus = 0
    on_spot = spot_groups(conf) if spot else []
    for role in ("master", "core", "task"):
        group = conf[f"aws.cluster.{role}"]
        price = _instance(region_prices, group["instance_type"], f"aws.cluster.{role}.instance_type")
        ec2 = price["ec2_spot"] if role in on_spot else price["ec2_on_demand"]
        hourly += group["count"] * (ec2 + price["emr"])
        if role != "master":
            worker_vcpus += group["count"] * price["vcpu"]
    if worker_vcpus == 0:
        raise DeployError("aws.cluster.core.count and aws.cluster.task.count are both 0: no worker would run the jobs")
    idle_minutes = conf["aws.cluster.idle_timeout_minutes"] if conf["aws.cluster.keep_alive"] else 0
    steps_minutes = len(jobs(s)) * conf["aws.cost.step_startup_minutes"]
    fixed_hours = (conf["aws.cost.cluster_startup_minutes"] + steps_minutes + idle_minutes) / 60
    hours_per_image = conf["aws.cost.chain_factor"] / images_per_s_per_vcpu / 3600 / worker_vcpus
    return Line(
        name=f"EMR on EC2, spot {' and '.join(on_spot)} nodes" if spot else "EMR on EC2, on-demand",
        fixed_usd=hourly * fixed_hours,
        usd_per_image=hourly * hours_per_image,
        fixed_hours=fixed_hours,
        hours_per_image=hours_per_image,
    )


def serverless_line(s: Settings, region_prices: dict, images_per_s_per_vcpu: float) -> Line:
    conf = s.conf
    app = conf["aws.serverless"]
    if app["architecture"] not in region_prices["serverless"]:
        raise DeployError(f"aws.serverless.architecture {app['architecture']} has no price in conf/pricing.yaml")
    price = region_prices["serverless"][app["architecture"]]

    def worker_hour(worker: dict) -> float:
        return (
            worker["cpu"] * price["vcpu_hour"]
            + worker["memory_gb"] * price["gb_hour"]
            + max(0, worker["disk_gb"] - SERVERLESS_FREE_DISK_GB) * price["storage_gb_hour"]
        )

    driver, executor = worker_hour(app["driver"]), worker_hour(app["executor"])
    hourly = driver + app["max_executors"] * executor
    startup_hours = len(jobs(s)) * conf["aws.cost.serverless_job_startup_minutes"] / 60
    warm = app["initial_capacity"]
    warm_usd = (warm["drivers"] * driver + warm["executors"] * executor) * app["auto_stop_idle_minutes"] / 60
    executor_vcpus = app["max_executors"] * app["executor"]["cpu"]
    hours_per_image = conf["aws.cost.chain_factor"] / images_per_s_per_vcpu / 3600 / executor_vcpus
    return Line(
        name="EMR Serverless",
        fixed_usd=hourly * startup_hours + warm_usd,
        usd_per_image=hourly * hours_per_image,
        fixed_hours=startup_hours,
        hours_per_image=hours_per_image,
    )


def break_even(a: Line, b: Line) -> float | None:
    """Images at which `a` and `b` cost the same; None when one of them is cheaper at every size."""
    slope = a.usd_per_image - b.usd_per_image
    if slope == 0:
        return None
    images = (b.fixed_usd - a.fixed_usd) / slope
    return images if images > 0 else None


def estimate(s: Settings, image_counts: list[int]) -> str:
    """The table and recommendation printed by `python -m deploy cost`."""
    rate, source = throughput(s)
    region_prices = prices(s)
    serverless = serverless_line(s, region_prices, rate)
    on_demand = cluster_line(s, region_prices, rate, spot=False)
    spot = cluster_line(s, region_prices, rate, spot=True) if spot_groups(s.conf) else None
    options = [on_demand, *([spot] if spot else []), serverless]

    conf = s.conf
    lines = [
        f"Cost of one bronze -> silver -> gold run in {s.region} (USD; prices: {conf['aws.cost.pricing_file']})",
        f"throughput: {rate:g} images/s per vCPU, {source}; chain = {conf['aws.cost.chain_factor']:g} x silver",
        f"cluster: {_cluster_shape(conf)}, {conf['aws.cost.cluster_startup_minutes']:g} min start-up"
        + (f" + {conf['aws.cluster.idle_timeout_minutes']} min idle" if conf["aws.cluster.keep_alive"] else ""),
        f"serverless: driver + {conf['aws.serverless.max_executors']} executors of "
        f"{conf['aws.serverless.executor.cpu']} vCPU / {conf['aws.serverless.executor.memory_gb']} GB",
        f"jobs per run: {_jobs_sentence(s)}; start-up {conf['aws.cost.serverless_job_startup_minutes']:g} min "
        f"per Serverless job run, {conf['aws.cost.step_startup_minutes']:g} min per cluster step",
        "",
        f"| {'images':>9} | " + " | ".join(f"{o.name:>25}" for o in options) + " | cheapest",
        f"|{'-' * 11}|" + "|".join("-" * 27 for _ in options) + "|---------",
    ]
    for n in image_counts:
        cells = [f"{f'${o.usd(n):,.2f} ({o.hours(n) * 60:,.0f} min)':>25}" for o in options]
        cheapest = min(options, key=lambda o: o.usd(n))
        lines.append(f"| {n:>9,} | " + " | ".join(cells) + f" | {cheapest.name}")
    lines.append("")
    if spot is None:
        lines.append(
            "No spot line: no worker group with nodes is on spot in aws.cluster (core nodes stay on demand: "
            "the driver may run there); add spot task nodes with --set aws.cluster.task.count=N to price them."
        )
    lines += [_break_even_sentence(serverless, cluster) for cluster in (on_demand, spot) if cluster]
    lines.append(_one_application_sentence(s, region_prices, rate, spot=spot is not None))
    lines.append(f"Recommendation: {_recommendation(serverless, spot, on_demand)}")
    return "\n".join(lines)


def _jobs_sentence(s: Settings) -> str:
    run = jobs(s)
    if s.conf["aws.one_application"]:
        return f"1 ({run[0]}: {', '.join(s.conf['aws.stages'])} in one Spark application, aws.one_application)"
    return f"{len(run)} (one per stage: {', '.join(run)})"


def _one_application_sentence(s: Settings, region_prices: dict, rate: float, spot: bool) -> str:
    """What the other choice of aws.one_application costs per run (only the start-up differs)."""
    flipped = str(not s.conf["aws.one_application"]).lower()
    other = dataclasses.replace(s, conf=s.conf.with_overrides([f"aws.one_application={flipped}"]))
    one, per_stage = (s, other) if s.conf["aws.one_application"] else (other, s)
    serverless = [serverless_line(x, region_prices, rate) for x in (one, per_stage)]
    cluster = [cluster_line(x, region_prices, rate, spot=spot) for x in (one, per_stage)]
    saving = "; ".join(
        f"{lines[0].name}: {(lines[1].fixed_hours - lines[0].fixed_hours) * 60:,.1f} billed min of start-up, "
        f"${lines[1].fixed_usd - lines[0].fixed_usd:,.2f} per run"
        for lines in (serverless, cluster)
    )
    if s.conf["aws.one_application"]:
        return f"One application per run (aws.one_application) saves, against one job per stage: {saving}."
    return f"With aws.one_application=true (the chain as one job) a run would save {saving}."


def _cluster_shape(conf) -> str:
    parts = [
        f"{conf[f'aws.cluster.{role}.count']} x {conf[f'aws.cluster.{role}.instance_type']} {role}"
        for role in ("master", "core", "task")
        if conf[f"aws.cluster.{role}.count"]
    ]
    return ", ".join(parts)


def _recommendation(serverless: Line, spot: Line | None, on_demand: Line) -> str:
    """Serverless for small runs, the (spot, when configured) cluster for large ones, on-demand as the fallback."""
    cluster = spot or on_demand
    fallback = f" (fall back to {on_demand.name} when spot capacity is short)" if spot else ""
    point = break_even(serverless, cluster)
    if point is None:
        best = min((serverless, cluster), key=lambda o: o.usd(1))
        return f"{best.name} at every size{fallback}."
    small, large = sorted((serverless, cluster), key=lambda o: o.fixed_usd)
    return f"{small.name} up to about {point:,.0f} images per run, {large.name} above{fallback}."


def _break_even_sentence(serverless: Line, cluster: Line) -> str:
    point = break_even(serverless, cluster)
    if point is None:
        winner, loser = sorted((serverless, cluster), key=lambda o: o.usd(1))
        return f"{winner.name} costs less than {loser.name} at every size."
    small, large = sorted((serverless, cluster), key=lambda o: o.fixed_usd)
    return (
        f"Break-even {serverless.name} vs {cluster.name}: {point:,.0f} images; "
        f"below, {small.name} costs less, above, {large.name}."
    )
