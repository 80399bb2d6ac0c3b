"""`make run-s3`: the pipeline on s3a:// against a local S3-compatible server, start to finish.

Starts MinIO on 127.0.0.1 (random port, temporary data folder, credentials made for this run and
handed over in environment variables only), creates a bucket, uploads the input images with boto3,
runs each stage as its own command exactly as on EMR (`python -m pipelines.<stage> --conf
conf/local.yaml --conf conf/s3-local.yaml`), reads the Delta tables back over s3a:// and prints
their row counts, then stops the server and deletes its data.

--compare-local runs the same stages on the same images with input and lake on local disk, for the
S3-versus-local-disk time (docs/s3.md). Run from the repository root: `python -m scripts.run_s3_demo`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines import stages
from pipelines.config import PROJECT_ROOT, ConfError, load_conf
from pipelines.layout import Layout
from rehearsal.sample import copy_subset, image_files, spread
from rehearsal.s3_server import (
    S3_LOCAL_CONF,
    LocalS3Server,
    S3ServerError,
    load_s3_conf,
    new_bucket_name,
    patched_environ,
    region_of_overlay,
    upload_tree,
)

# The chain `make run` runs, in the registry's order; each is `python -m pipelines.<stage>`.
# --through stops it earlier (the classifier needs Training and Test images of the same fruits).
STAGES = stages.names()
LOCAL_CONF = "conf/local.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=None,
        help="local folder of images to upload (default: input.path of conf/local.yaml, prepared by `make run`)",
    )
    parser.add_argument(
        "--limit", type=int, default=0,
        help="upload only this many images, spread evenly over the labels (default 0: all of them)",
    )
    parser.add_argument(
        "--compare-local", action="store_true",
        help="also run the same stages on the same images on local disk and print both times",
    )
    parser.add_argument(
        "--through", choices=STAGES, default=STAGES[-1],
        help=f"last stage to run (default {STAGES[-1]}: the whole chain; e.g. gold for a few images, too few to train the classifier)",
    )
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
        help="conf override passed to every stage, e.g. --set spark.master=local[2] (repeatable)",
    )
    return parser.parse_args(argv)


def run_stages(chain: tuple[str, ...], conf_args: list[str], env: dict[str, str], where: str) -> dict[str, float]:
    """Each stage as its own process, like a spark-submit step; stops at the first failing stage."""
    seconds = {}
    for stage in chain:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", f"pipelines.{stage}", *conf_args],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        )
        seconds[stage] = time.monotonic() - started
        for line in done.stdout.splitlines():
            print(f"  [{where}] {line}")
        if done.returncode != 0:
            raise SystemExit(
                f"run-s3: `python -m pipelines.{stage}` on {where} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
            )
        print(f"  [{where}] {stage}: {seconds[stage]:.1f} s", flush=True)
    return seconds


def print_table_counts(conf) -> None:
    """Row counts of every lake table, read back over the conf's lake.root (s3a:// here)."""
    from pipelines.session import build_spark_session

    spark = build_spark_session(conf, "s3-demo-check")
    try:
        layout = Layout.from_conf(conf)
        for table in conf["lake.tables"]:
            location = layout.location(table)
            frame = layout.read(spark, table)
            count = "not published" if frame is None else f"{frame.count()} rows"
            print(f"  {location}: {count}")
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        local_conf = load_conf([LOCAL_CONF], args.overrides)
    except ConfError as exc:
        sys.exit(f"run-s3: conf error: {exc}")
    source = args.source or Path(local_conf.path("input.path"))
    if not source.is_dir():
        sys.exit(f"run-s3: input folder '{source}' does not exist: run `make run` once (it prepares it) or pass --source")
    files = spread(image_files(source, local_conf["input.extensions"]), args.limit)
    if not files:
        sys.exit(f"run-s3: no image under '{source}' (extensions {local_conf['input.extensions']})")

    scratch = Path(tempfile.mkdtemp(prefix="fruits-s3-demo-"))
    try:
        if args.limit:
            copy_subset(files, source, scratch / "input")
            files = [scratch / "input" / f.relative_to(source) for f in files]
            source = scratch / "input"
        with LocalS3Server(region_of_overlay()) as server:
            bucket = new_bucket_name()
            server.create_bucket(bucket)
            print(f"S3 server {server.endpoint} (MinIO, data in {server.base_dir}), bucket {bucket}")
            started = time.monotonic()
            uploaded = upload_tree(server.client(), source, bucket, "input", files)
            print(f"uploaded {uploaded} images from {source} in {time.monotonic() - started:.1f} s")
            with patched_environ(server.location_environment(bucket)):
                s3_conf = load_s3_conf(args.overrides)
                with patched_environ(server.credentials_environment(s3_conf)):
                    conf_args = [a for f in S3_LOCAL_CONF for a in ("--conf", f)] + [
                        a for o in args.overrides for a in ("--set", o)
                    ]
                    s3_seconds = run_stages(stages.through(args.through), conf_args, dict(os.environ), "s3a")
                    print("tables read back over s3a://:")
                    print_table_counts(s3_conf)
        if args.compare_local:
            local_args = ["--conf", LOCAL_CONF, "--set", f"input.path={source}", "--set", f"lake.root={scratch / 'lake'}"]
            local_args += [a for o in args.overrides for a in ("--set", o)]
            local_seconds = run_stages(stages.through(args.through), local_args, dict(os.environ), "local disk")
            print(f"time for {len(files)} images, stage by stage (s3a on MinIO vs local disk):")
            for stage in stages.through(args.through):
                print(f"  {stage}: {s3_seconds[stage]:.1f} s vs {local_seconds[stage]:.1f} s")
            print(f"  chain: {sum(s3_seconds.values()):.1f} s vs {sum(local_seconds.values()):.1f} s")
        else:
            print(f"chain on s3a for {len(files)} images: {sum(s3_seconds.values()):.1f} s")
    except S3ServerError as exc:
        sys.exit(f"run-s3: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
