"""`python -m bench.serving [--conf FILE] [--set KEY=VALUE]`: the prediction service's latency beside its limit.

Why these three measurements (issue 16's target: single-photo latency p95 within
`bench.targets.serving_p95_vs_limit` x MobileNetV2 alone on this machine):
- limit: MobileNetV2 alone on one photo (the predictor's own feature model, one checked photo per
  call), what no answer can beat;
- predictor: `Predictor.answer` on the photo's bytes (bronze's checks, the model, PCA, classifier,
  nearest images), in-process;
- service: `POST /predict` to `python -m serving` started in its own process on a free loopback
  port, as the app calls it (HTTP, multipart, JSON): latency with one client, then photos per
  second with `bench.serving_clients` clients at once.

The photos are `bench.serving_photos` Test photos of the sample (input.seed_path, else input.path),
spread over the labels, each asked `bench.serving_rounds` times after one warm-up call. The lake is
the conf's: it needs a published classifier (`make run`). Results are printed and written to
`bench.results_dir`/serving-<timestamp>.json (latest.json, the chain bench's, is left alone).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from bench.machine import describe_machine
from bench.summary import judge
from pipelines.options import EXIT_INPUT, load_stage_conf, stage_parser
from pipelines.bundle import BundleError, NoClassifier
from pipelines.config import PROJECT_ROOT, Conf, ConfError
from pipelines.features import WeightsUnavailable
from pipelines.predict import Predictor, check_photo

START_TIMEOUT_S = 300


class ServiceDidNotStart(RuntimeError):
    """`python -m serving` exited or did not listen in time; the message holds the end of its stderr."""


def percentiles(seconds: list[float]) -> dict:
    """p50 and p95 in milliseconds (nearest rank), and the count."""
    ordered = sorted(seconds)
    rank = max(0, -(-95 * len(ordered) // 100) - 1)
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[rank], "count": len(ordered)}


def bench_photos(conf: Conf) -> list[Path]:
    """`bench.serving_photos` Test photos spread over the labels (every n-th in sorted order)."""
    root = Path(conf.path("input.seed_path") if conf["input.seed_path"] else conf.path("input.path"))
    photos = sorted((root / "Test").glob("*/*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no Test photos under {root} (input.seed_path / input.path): run `make run` first")
    step = max(1, len(photos) // conf["bench.serving_photos"])
    return photos[::step][: conf["bench.serving_photos"]]


def timed_calls(call, items, rounds: int) -> list[float]:
    call(items[0])  # warm-up: the interpreter plans its graph for this input shape once
    seconds = []
    for _ in range(rounds):
        for item in items:
            started = time.perf_counter()
            call(item)
            seconds.append(time.perf_counter() - started)
    return seconds


def multipart(photo: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{photo.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: tuple[bytes, str]) -> dict:
    request = urllib.request.Request(url, data=body[0], headers={"Content-Type": body[1]}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def start_service(argv: list[str], logs: Path) -> tuple[subprocess.Popen, str]:
    """`python -m serving --port 0` with the bench's conf options; its URL once it listens."""
    out, err = logs / "serving.out", logs / "serving.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "serving", *argv, "--host", "127.0.0.1", "--port", "0"],
                                   cwd=PROJECT_ROOT, stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (found := re.search(r"listening on (http://\S+/)", out.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise ServiceDidNotStart(f"python -m serving did not start (exit {process.poll()}): {err.read_text()[-1000:]}")
        time.sleep(0.5)
    return process, found.group(1)


def measure(conf: Conf, argv: list[str]) -> dict:
    photos = bench_photos(conf)
    rounds = conf["bench.serving_rounds"]
    predictor = Predictor.load(conf)
    checked = [check_photo(p.read_bytes(), conf["bronze.max_image_pixels"]) for p in photos]
    limit = timed_calls(lambda c: predictor.model.features([c]), checked, rounds)
    answered = timed_calls(lambda p: predictor.answer(p.read_bytes(), p.name), photos, rounds)
    right = sum(predictor.answer(p.read_bytes(), p.name)["top"][0]["label"] == p.parent.name for p in photos)
    bodies = [multipart(p) for p in photos]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as logs:
        process, url = start_service(argv, Path(logs))
        try:
            served = timed_calls(lambda b: post(url + "predict", b), bodies, rounds)
            clients = conf["bench.serving_clients"]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda b: post(url + "predict", b), bodies * rounds))
            concurrent = len(bodies) * rounds / (time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(timeout=30)
    results = {
        "versions": predictor.versions, "photos": len(photos), "rounds": rounds, "top1_right": right,
        "limit_mobilenet_v2": percentiles(limit), "predictor_answer": percentiles(answered),
        "service_one_client": {**percentiles(served), "photos_per_s": len(served) / sum(served)},
        "service_clients": {"clients": clients, "photos_per_s": concurrent},
        "load_average": os.getloadavg(), "machine": describe_machine(),
    }
    target = conf["bench.targets.serving_p95_vs_limit"]
    ratio = results["service_one_client"]["p95_ms"] / results["limit_mobilenet_v2"]["p95_ms"]
    results["p95_vs_limit"] = {"value": ratio, "target": target, "verdict": judge(ratio, target, "<=")}
    return results


def report_lines(results: dict) -> list[str]:
    def line(name: str, figures: dict) -> str:
        rate = f", {figures['photos_per_s']:.1f} photos/s" if "photos_per_s" in figures else ""
        return f"  {name:<32} p50 {figures['p50_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f} ms{rate}"

    ratio = results["p95_vs_limit"]
    return [
        f"serving bench: classifier {results['versions']['classifier_version']}, {results['photos']} Test photos x "
        f"{results['rounds']} rounds, top-1 right on {results['top1_right']}/{results['photos']}",
        line("MobileNetV2 alone (the limit)", results["limit_mobilenet_v2"]),
        line("Predictor.answer (in-process)", results["predictor_answer"]),
        line("POST /predict, 1 client", results["service_one_client"]),
        f"  POST /predict, {results['service_clients']['clients']} clients: {results['service_clients']['photos_per_s']:.1f} photos/s",
        f"  p95 service / p95 limit = {ratio['value']:.2f} (target <= {ratio['target']}): {ratio['verdict']}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Latency of the prediction service beside MobileNetV2 alone (docs/serving.md).")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    passed = [item for conf_file in args.conf for item in ("--conf", conf_file)]
    passed += [item for override in args.overrides for item in ("--set", override)]
    try:
        results = measure(conf, passed)
    except (NoClassifier, BundleError, ConfError, WeightsUnavailable, FileNotFoundError, ServiceDidNotStart) as exc:
        print(f"bench.serving: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print("\n".join(report_lines(results)))
    folder = Path(conf.path("bench.results_dir"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"serving-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    target.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"  written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
