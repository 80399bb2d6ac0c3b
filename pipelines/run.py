"""The chain in one Spark application: each stage's own main in turn, then the quality report.

`python -m pipelines.run [--conf FILE] [--set KEY=VALUE] [--jobs bronze,silver,gold]` (`make run`).

Why: a stage run as its own process pays a JVM start, a session, its Python imports and the start
of its Python workers before it reads a row, for every stage of every run: for an increment of a
few photos that fixed cost is most of the run (docs/benchmarks.md). Here the stages share one
session. Each still runs its own module's `main` with the same options: its own reads, quality gate
and commits, exactly as when it runs alone (`python -m pipelines.<stage>`, or `spark-submit`), where
it joins the session the launcher started the same way. The first stage that fails stops the chain
with its exit code (cli.execute_stage lists them); the later stages do not run.

The chain holds the lake's writer lock (pipelines/lock.py) from its first stage to its last: a run,
a maintenance or an erasure of the same lake waits for it or exits 1 naming it. With `--watch
FOLDER` it runs whenever new images settle in FOLDER (pipelines/watch.py) until Ctrl-C or TERM.

On AWS the deploy tool runs this module as one job (conf `aws.one_application`).
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from pyspark.sql import SparkSession

from pipelines import lock, stages
from pipelines.options import EXIT_INPUT, load_stage_conf, new_run_id, stage_parser
from pipelines.config import Conf, ConfError
from pipelines.layout import Layout
from pipelines.session import build_spark_session
from quality import outcomes

CATALOG = "catalog"


def chosen_jobs(listed: str | None) -> list[str]:
    """The jobs to run: the declared stages by default, else the comma list (in the chain's order,
    each after its upstream; `catalog` may follow the stages). ValueError says what is wrong."""
    if not listed:
        return list(stages.names())
    jobs = [job.strip() for job in listed.split(",") if job.strip()]
    problem = stages.order_problem(jobs) if jobs else "no job named"
    if problem:
        raise ValueError(f"--jobs {listed!r}: {problem}")
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", metavar="A,B,...",
        help=f"jobs to run, in order (default: the declared stages {','.join(stages.names())}; "
        f"'{CATALOG}' registers the tables after them)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not print the quality report at the end")
    parser.add_argument(
        "--watch", metavar="FOLDER",
        help="run the chain on FOLDER (as input.path) whenever new images settle there (conf watch.*), until Ctrl-C",
    )
    args = parser.parse_args(argv)
    try:
        jobs = chosen_jobs(args.jobs)
    except ValueError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.watch:
        folder = args.watch if "://" in args.watch else os.path.abspath(args.watch)
        if "://" not in folder and not os.path.isdir(folder):
            print(f"run: --watch {args.watch}: no such folder; create it (photos are dropped there) or name another", file=sys.stderr)
            return EXIT_INPUT
        args.overrides.append(f"input.path={folder}")
    conf = load_stage_conf(args)
    # The catalog's metastore settings are static: the one session must start with them.
    spark = build_spark_session(conf, "chain", catalog=CATALOG in jobs)
    options = [*(f"--conf={path}" for path in args.conf), *(f"--set={item}" for item in args.overrides)]
    if args.watch:
        from pipelines import watch

        return watch.watch(spark, conf, lambda: run_chain(spark, conf, jobs, options, not args.no_report))
    return run_chain(spark, conf, jobs, options, not args.no_report)


def run_chain(spark: SparkSession, conf: Conf, jobs: list[str], options: list[str], report: bool) -> int:
    """The jobs in order under the lake lock, then the quality report; the first failing job's exit code.

    The outcome rows of stages that found nothing to validate are appended in one commit at the
    end (quality.outcomes.held_until_end), not one per stage.
    """
    try:
        run_id = new_run_id(conf)
        with lock.held(conf, "run", run_id), outcomes.held_until_end(spark, conf):
            started = time.monotonic()
            for job in jobs:
                code = importlib.import_module(f"pipelines.{job}").main(options)
                if code:
                    print(f"run: {job} failed (exit {code}); the jobs after it ({_after(jobs, job)}) did not run", file=sys.stderr)
                    return code
            print(f"run: {', '.join(jobs)} done in one application, {time.monotonic() - started:.1f} s", flush=True)
    except lock.LakeBusy as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    except ConfError as exc:
        print(f"conf error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:  # the lock file cannot be created: lake.root is a file, or not writable
        print(f"run: cannot take the lake lock {Layout.from_conf(conf).lock}: {exc}; set lake.root to a writable folder", file=sys.stderr)
        return EXIT_INPUT
    if report:
        from quality import report as quality_report

        return quality_report.main(options)
    return 0


def _after(jobs: list[str], job: str) -> str:
    return ", ".join(jobs[jobs.index(job) + 1 :]) or "none"


if __name__ == "__main__":
    sys.exit(main())
