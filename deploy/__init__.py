"""Deploy the pipeline on AWS: `python -m deploy provision|package|run|status|logs|teardown|cost`.

Each AWS module builds its requests with pure functions (the plan) and hands them to
`deploy.executor.Executor`, which either makes the call or, with `--dry-run`, prints it and makes
none. Every name, size, region and path comes from conf (`aws:` in conf/base.yaml, conf/aws.yaml);
see docs/deploy.md for the choices and docs/cost.md for the cost model.
"""
