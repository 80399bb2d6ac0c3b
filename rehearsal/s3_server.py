"""A real S3-compatible server (MinIO) on 127.0.0.1 for the S3 tests, `make run-s3` and `make rehearse`.

Why a real server and not an in-process mock: the point is to prove that the jobs work over the
S3 protocol as Hadoop S3A and the AWS SDK speak it (signing, path-style addressing, multipart
uploads, listing, Delta's log on an object store). A mock of boto3 would not see the JVM's traffic.

The server is the MinIO binary that `scripts/install-s3-server.sh` builds into `.tools/bin/`
(or the one named by FRUITS_S3_SERVER_BIN). Each server gets a random free port, its own
temporary data folder and credentials made for this run; the credentials reach the server, Spark
and boto3 through environment variables only (`location_environment()`, `credentials_environment()`),
never a file or a command line.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Conf

INSTALL_SCRIPT = "scripts/install-s3-server.sh"
SERVER_BIN_ENV = "FRUITS_S3_SERVER_BIN"
DEFAULT_SERVER_BIN = PROJECT_ROOT / ".tools" / "bin" / "minio"
# The variables conf/s3-local.yaml reads: the server's URL and the bucket of this run.
ENDPOINT_ENV = "FRUITS_S3_ENDPOINT"
BUCKET_ENV = "FRUITS_BUCKET"
# MinIO reports an object's KMS key as arn:aws:kms:<name>; a key may be given in that form or by its name.
KMS_ARN_PREFIX = "arn:aws:kms:"
# The overlay, on top of conf/local.yaml, that points input and lake at the local server.
S3_LOCAL_CONF = ("conf/local.yaml", "conf/s3-local.yaml")


class S3ServerError(RuntimeError):
    """The local S3 server is missing or did not start; the message says what to do."""


def server_binary() -> Path:
    """The MinIO binary: $FRUITS_S3_SERVER_BIN, else the one the install script puts in .tools/bin."""
    binary = Path(os.environ.get(SERVER_BIN_ENV) or DEFAULT_SERVER_BIN)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise S3ServerError(
            f"S3 server binary '{binary}' not found: run `make setup` (or `bash {INSTALL_SCRIPT}`), "
            f"or point {SERVER_BIN_ENV} at a MinIO binary"
        )
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on `host` (the server may still lose a race for it: start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def new_bucket_name(prefix: str = "fruits") -> str:
    """A fresh bucket name per run (lowercase, 3-63 characters, as S3 requires)."""
    return f"{prefix}-{secrets.token_hex(6)}"


class LocalS3Server:
    """One MinIO process on 127.0.0.1, its data in a temporary folder deleted at stop().

    Usable as a context manager. `region` is the conf's `s3.region`: the server gives it as every
    bucket's location, as AWS does (MinIO does not reject a signature made for another region).
    """

    host = "127.0.0.1"

    def __init__(
        self, region: str, binary: Path | None = None, start_timeout_s: float = 60.0, kms_key_name: str | None = None,
        home: Path | None = None, secrets_of_home: dict[str, str] | None = None,
    ):
        """`home`: a folder kept across starts (data and log), for a lake that outlives one process
        (`make demo` prepares it once, then serves it again); its server must get the same root keys
        and KMS key at every start: `secrets_of_home` (as `home_secrets()` returned them the first
        time). None: a temporary folder deleted at stop(), and secrets made for this run."""
        self.region = region
        # With a key name, the server encrypts with a key of its own under that name (MinIO's
        # single-key KMS), so SSE-KMS requests, the bucket's default encryption and a bucket policy
        # naming the key behave as with a KMS key on AWS.
        self.kms_key_name = kms_key_name
        self.binary = binary or server_binary()
        self.start_timeout_s = start_timeout_s
        self.home = home
        given = secrets_of_home or {}
        # MinIO requires 3+ characters for the access key and 8+ for the secret.
        self.access_key = given.get("access_key") or "fruits" + secrets.token_hex(6)
        self.secret_key = given.get("secret_key") or secrets.token_urlsafe(30)
        self.kms_secret = given.get("kms_secret") or base64.b64encode(secrets.token_bytes(32)).decode()
        self.port = free_port(self.host)
        self.base_dir: Path | None = None
        self.process: subprocess.Popen | None = None

    def home_secrets(self) -> dict[str, str]:
        """What a server on the same `home` needs to read its data again (root keys, KMS key)."""
        return {"access_key": self.access_key, "secret_key": self.secret_key, "kms_secret": self.kms_secret}

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        if self.base_dir is None:
            raise S3ServerError("the S3 server was not started")
        return self.base_dir / "minio.log"

    def start(self, attempts: int = 3) -> "LocalS3Server":
        """Start the server and wait until it answers its readiness probe; a lost port race retries."""
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            self.base_dir = self.home
        else:
            self.base_dir = Path(tempfile.mkdtemp(prefix="fruits-s3-"))
        for attempt in range(1, attempts + 1):
            self._spawn()
            if self._wait_ready():
                return self
            self._terminate()
            if attempt < attempts:
                self.port = free_port(self.host)
        log_tail = self.log_file.read_text(errors="replace")[-2000:]
        self.stop()
        raise S3ServerError(
            f"S3 server '{self.binary}' did not become ready on {self.endpoint} within "
            f"{self.start_timeout_s:.0f} s ({attempts} attempts). Last log lines:\n{log_tail}"
        )

    def stop(self) -> None:
        """Stop the process and delete its data folder unless it is a kept `home` (idempotent)."""
        self._terminate()
        if self.base_dir is not None and self.home is None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> "LocalS3Server":
        try:
            return self.start()
        except BaseException:  # interrupted while starting: nothing is left running
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self) -> None:
        assert self.base_dir is not None
        data_dir = self.base_dir / "data"
        data_dir.mkdir(exist_ok=True)
        # A minimal environment: the secrets go to the server here and nowhere else on its side.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base_dir),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_SITE_REGION": self.region,
            "MINIO_BROWSER": "off",  # no web console: only the S3 API listens
            "MINIO_UPDATE": "off",
        }
        if self.kms_key_name:
            name = self.kms_key_name.removeprefix(KMS_ARN_PREFIX)
            env["MINIO_KMS_SECRET_KEY"] = f"{name}:{self.kms_secret}"
        command = [
            str(self.binary), "server", "--quiet", "--anonymous",
            "--address", f"{self.host}:{self.port}",
            "--certs-dir", str(self.base_dir / "certs"),
            str(data_dir),
        ]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _wait_ready(self) -> bool:
        """True once /minio/health/ready answers 200; False if the process ends or time runs out."""
        deadline = time.monotonic() + self.start_timeout_s
        url = f"{self.endpoint}/minio/health/ready"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        return False

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def location_environment(self, bucket: str) -> dict[str, str]:
        """The variables conf/s3-local.yaml reads: this server's URL and the bucket of the run."""
        return {ENDPOINT_ENV: self.endpoint, BUCKET_ENV: bucket}

    def credentials_environment(self, conf: Conf) -> dict[str, str]:
        """This server's credentials under the variable names conf declares (`s3.*_env`).

        A session token variable left in the caller's environment would make S3A send a token the
        server never issued, so it is blanked.
        """
        return {
            conf["s3.access_key_env"]: self.access_key,
            conf["s3.secret_key_env"]: self.secret_key,
            conf["s3.session_token_env"]: "",
        }

    def client(self, service: str = "s3", keys: tuple[str, str] | None = None):
        """A boto3 client for this server (path-style addressing, the server's region); root keys by default."""
        import boto3
        from botocore.config import Config

        access_key, secret_key = keys or (self.access_key, self.secret_key)
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def add_user(self, name: str, policy: dict) -> tuple[str, str]:
        """A user of this server whose only rights are `policy` (IAM JSON); returns its (access, secret) keys.

        Through MinIO's admin API (minio-py's MinioAdmin): the user, a policy named after it, the
        attachment. Requests of this user are then allowed or denied as IAM would for a role with
        that policy (the rehearsal gives it the S3 part of the job role's policy).
        """
        from minio.credentials import StaticProvider
        from minio.minioadmin import MinioAdmin

        admin = MinioAdmin(
            endpoint=f"{self.host}:{self.port}",
            credentials=StaticProvider(self.access_key, self.secret_key),
            region=self.region,
            secure=False,
        )
        secret = secrets.token_urlsafe(30)
        admin.user_add(name, secret)
        admin.policy_add(name, policy=policy)
        admin.attach_policy([name], user=name)
        return name, secret

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        if self.region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})


def region_of_overlay() -> str:
    """`s3.region` of conf/s3-local.yaml, read before any server exists (placeholders filled)."""
    placeholders = {ENDPOINT_ENV: "http://127.0.0.1:1", BUCKET_ENV: "placeholder"}
    with patched_environ(placeholders):
        return load_s3_conf()["s3.region"]


def load_s3_conf(overrides: Iterable[str] = ()) -> Conf:
    from pipelines.config import load_conf

    return load_conf(S3_LOCAL_CONF, overrides)


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore the previous values."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def upload_tree(client, source: Path, bucket: str, prefix: str, files: Iterable[Path], workers: int = 8) -> int:
    """Upload `files` (under `source`) to s3://bucket/prefix/<path relative to source>, in parallel.

    Keys keep the folder names as they are, spaces included (the label folders have them).
    Returns the number of objects uploaded.
    """
    files = list(files)

    def put(path: Path) -> None:
        key = f"{prefix.strip('/')}/{path.relative_to(source).as_posix()}"
        client.upload_file(str(path), bucket, key)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(put, files):
            pass
    return len(files)


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    paginator = client.get_paginator("list_objects_v2")
    return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])]
