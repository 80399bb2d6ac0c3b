"""The AWS run rehearsed on this machine: stand-ins for AWS that are real servers on loopback.

- `s3_server`: a MinIO process (the S3 API as Hadoop S3A and boto3 speak it), used by the S3 tests,
  `make run-s3` and `make rehearse`.
"""
