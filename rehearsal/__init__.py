"""The AWS run rehearsed on this machine: stand-ins for AWS that are real servers on loopback.

- `s3_server`: a MinIO process (the S3 API as Hadoop S3A and boto3 speak it; users with IAM
  policies, a KMS key), used by the S3 tests, `make run-s3` and `make rehearse`;
- `spark_cluster`: a Spark standalone master and workers, each its own JVM;
- `submit`: deploy's job requests turned into spark-submit commands, as EMR runs them;
- `environment`: the environment archive from deploy/build_env.sh, cached by its inputs;
- `sample`, `compare`: the images drawn for a run, and the lake read back against a local run;
- `stand_ins`: those pieces brought up step by step, shared by the rehearsal and the demo;
- `rehearse`: `make rehearse` (`python -m rehearsal`), the six steps in order;
- `notebook`: `make notebook`, the walkthrough notebook executed against the same stand-ins;
- `demo`, `query`, `screenshots`: `make demo`, the defence's live demo on a prepared lake, its
  Spark SQL session, and the deck's evidence captured during it.
"""
