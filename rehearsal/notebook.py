"""`make notebook`: the walkthrough notebook executed in place against the rehearsal's stand-ins for AWS.

What the committed outputs of notebooks/fruits_walkthrough.ipynb come from (docs/deploy.md,
"Dress rehearsal"): the bucket laid out by `deploy provision`'s code on a MinIO server with its
KMS key, a user holding only the job role's S3 policy, `deploy package` uploading code,
environment archive, weights and the images of the notebook's fruits (`gold.plot_labels`), and a
Spark standalone cluster of two one-core workers. The notebook's kernel (this virtualenv's Python)
is the driver, in client mode, as an EMR Studio session's driver is; it reads conf/aws.yaml +
conf/rehearse.yaml like the jobs, with the job user's keys, and its executors run in the workers
with the environment archive unpacked as ./environment (`spark.archives`, from the bucket), as on
EMR. Everything started is stopped at the end, even on failure; the logs stay under
rehearsal.work_dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shlex
import shutil
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from deploy import package
from deploy.serverless import spark_settings
from deploy.spark_args import ENV_PYTHON, environment_conf
from pipelines.config import PROJECT_ROOT, Conf, load_conf, resolve_location
from rehearsal import environment, sample, stand_ins
from rehearsal.s3_server import LocalS3Server, new_bucket_name, patched_environ
from rehearsal.submit import platform_conf

NOTEBOOK = PROJECT_ROOT / "notebooks" / "fruits_walkthrough.ipynb"
KERNEL = "fruits-notebook-rehearsal"
# Executor settings of the Serverless request the notebook's session takes over (sizes that fit a worker).
EXECUTOR_KEYS = ("spark.executor.cores", "spark.executor.memory")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.notebook", description=__doc__.splitlines()[0])
    # 40 per fruit: with 100 images (12 per fruit) the classifier's gate refused the model (Test
    # accuracy under classifier.min_accuracy), and the notebook stops there.
    parser.add_argument("--images", type=int, default=320, help="the notebook's subset (FRUITS_NOTEBOOK_IMAGES)")
    parser.add_argument("--output", type=Path, default=NOTEBOOK, help="where the executed notebook is written (default: in place)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stand_ins.install_signal_handlers()
    local = load_conf([stand_ins.LOCAL_CONF])
    run_dir = Path(resolve_location(local["rehearsal.work_dir"])) / ("notebook-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    scratch, logs = run_dir / "scratch", run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            seconds = _run(args, local, scratch, logs, stack)
    except stand_ins.Interrupted as exc:  # Ctrl-C or a TERM: what was started is stopped by now
        print(f"notebook: interrupted by {exc} after {time.monotonic() - started:.0f} s; logs in {run_dir}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, the logs say more
        print(f"notebook: FAILED after {time.monotonic() - started:.0f} s: {type(exc).__name__}: {str(exc)[:2000]}", file=sys.stderr)
        print(f"notebook: logs and scratch kept in {run_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"notebook: executed against the rehearsal in {time.monotonic() - started:.0f} s "
          f"(cells {seconds:.0f} s); written to {args.output}; logs in {logs}")
    return 0


def _run(args, local: Conf, scratch: Path, logs: Path, stack: ExitStack) -> float:
    source = Path(local.path("input.path"))
    labels = set(local["gold.plot_labels"])
    files = [p for p in sample.image_files(source, local["input.extensions"]) if p.parent.name in labels]
    if not files:
        raise stand_ins.RehearsalError(f"no image of {sorted(labels)} under '{source}' (input.path of {stand_ins.LOCAL_CONF}): run `make test-data`")
    subset = scratch / "input"
    sample.copy_subset(files, source, subset)
    jars = stand_ins.platform_jars(local)
    bucket = new_bucket_name()
    aws = stand_ins.aws_conf(bucket)

    server = stack.enter_context(LocalS3Server(aws["s3.region"], kms_key_name=aws["s3.encryption_key"]))
    stack.enter_context(patched_environ(server.location_environment(bucket)))
    s = stand_ins.aws_settings(subset, scratch / 'dist', jars)
    stand_ins.provision(server, s)
    credentials, _ = stand_ins.add_job_user(server, s, logs)
    archive, built = environment.cached_archive(Path(resolve_location(local["rehearsal.env_cache_dir"])), logs / "build-env.log")
    s = stand_ins.aws_settings(subset, scratch / 'dist', jars, archive)
    package.package(stand_ins.LocalExecutor(server, s.region, io.StringIO()), s, with_env=True, with_data=True)
    print(f"notebook: {server.endpoint}, bucket {bucket}, {len(files)} images of {len(labels)} fruits uploaded, "
          f"environment {archive.name} ({'built now' if built else 'cached'})", flush=True)

    job_env = stand_ins.job_environment(credentials, s.region)
    spark_cluster = stand_ins.start_cluster(stack, s, local, scratch / "cluster", logs, job_env)
    print(f"notebook: {spark_cluster.master_url}, {spark_cluster.alive_workers()} workers; executing {NOTEBOOK.name}", flush=True)
    kernel_env = _kernel_environment(s, spark_cluster.master_url, server.endpoint, jars, job_env, args.images, scratch)
    return _execute(args, kernel_env, logs)


def _kernel_environment(s, master_url: str, endpoint: str, jars: dict, job_env: dict, images: int, scratch: Path) -> dict[str, str]:
    """The kernel's environment: the jobs' conf, the job user's keys, and the session settings a job
    gets from its request and from EMR (environment archive, executor sizes, S3 connector jars)."""
    platform = platform_conf(master_url, endpoint, s.region, jars["class_path"])
    platform.pop("spark.master")
    request = dict(spark_settings(dataclasses.replace(s, job_overrides=())))
    extra = {
        **platform,
        **dict(environment_conf(s)),
        "spark.jars": request["spark.jars"],
        "spark.executorEnv.PYSPARK_PYTHON": ENV_PYTHON,
        **{key: request[key] for key in EXECUTOR_KEYS},
    }
    settings = [f"spark.master={master_url}", "spark.extra=" + json.dumps(extra)]
    jupyter = scratch / "jupyter"
    kernel_dir = jupyter / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True, exist_ok=True)
    (kernel_dir / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Fruits venv (rehearsal)", "language": "python"}
    ))
    return {
        **job_env,
        "FRUITS_CONF": ",".join(stand_ins.AWS_CONFS),
        "FRUITS_SET": shlex.join(settings),
        "FRUITS_NOTEBOOK_IMAGES": str(images),
        # The executors' interpreter, relative to their working folder (the driver runs none).
        "PYSPARK_PYTHON": ENV_PYTHON,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "JUPYTER_PATH": str(jupyter),
    }


def _execute(args, kernel_env: dict[str, str], logs: Path) -> float:
    """Run every cell; a failing cell stops the run, and what ran is kept in logs/failed.ipynb."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.monotonic()
    with patched_environ(kernel_env):
        os.environ.pop("PYSPARK_GATEWAY_PORT", None)
        try:
            NotebookClient(
                notebook, timeout=args.timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
            ).execute()
        except Exception:
            nbformat.write(notebook, logs / "failed.ipynb")
            raise
    seconds = time.monotonic() - started
    notebook.metadata.pop("widgets", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(notebook, args.output)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
