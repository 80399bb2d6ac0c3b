"""The lake's writer lock: one run, watch run, maintenance or erasure writes a lake at a time.

Why: Delta's optimistic concurrency keeps each commit atomic, but an erasure or a VACUUM racing a
run is still wrong (a run could re-insert an image erased under it from a batch it staged before;
VACUUM could delete the files of a run's uncommitted staging). So the commands that write the lake
as a whole (`pipelines.run`, its `--watch` mode, `pipelines.maintain`, `pipelines.erase`) hold
this lock; the stages run one by one by hand are not guarded by it.

The lock is one object at `<lake.root>/<lake.lock>` holding who holds it (user, host, pid), the
purpose and run id, when it was taken and when it expires (JSON, never data). How it is atomic:

- local disk: `fcntl.flock` on the file, exclusive and non-blocking. The OS releases it when the
  holder's process ends, however it ends, so a crash never blocks the lake; the JSON only names
  the holder for the message of whoever finds it busy.
- S3 (s3a://): a conditional PUT. `If-None-Match: *` creates the object only if absent (S3 and
  MinIO refuse with 412 otherwise); an expired lock (a crashed holder) is taken over with
  `If-Match: <its ETag>`, so of two contenders only one wins; the holder renews it every third of
  `lake.lock_ttl_minutes` with `If-Match` on its own ETag (a holder that finds its lock taken over
  stops renewing and says so), and deletes it at the end with `If-Match` too.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

from pipelines.config import Conf, is_remote
from pipelines.layout import Layout


class LakeBusy(RuntimeError):
    """Another holder has the lake's lock; the message names it and when its lock expires."""


@dataclass(frozen=True)
class Holder:
    owner: str
    purpose: str
    run_id: str
    acquired_at: str
    expires_at: str
    token: str

    def describe(self) -> str:
        return f"{self.purpose} run {self.run_id} by {self.owner} since {self.acquired_at} (lock expires {self.expires_at})"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _holder(purpose: str, run_id: str, ttl: timedelta, token: str) -> Holder:
    now = _now()
    owner = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"
    return Holder(owner, purpose, run_id, now.isoformat(timespec="seconds"), (now + ttl).isoformat(timespec="seconds"), token)


def _parse(body: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(body.decode("utf-8")))
    except (ValueError, TypeError):
        return None


@contextmanager
def held(conf: Conf, purpose: str, run_id: str) -> Iterator[Holder]:
    """Hold the lake's lock for the block; LakeBusy when another holder keeps it past lake.lock_wait_seconds."""
    ttl = timedelta(minutes=conf["lake.lock_ttl_minutes"])
    location = Layout.from_conf(conf).lock
    lock = _S3Lock(conf, location, ttl) if is_remote(location) else _LocalLock(location)
    deadline = time.monotonic() + conf["lake.lock_wait_seconds"]
    holder = _holder(purpose, run_id, ttl, uuid.uuid4().hex)
    while True:
        busy = lock.acquire(holder)
        if busy is None:
            break
        if time.monotonic() >= deadline:
            raise LakeBusy(
                f"the lake {conf.path('lake.root')} is busy: {busy.describe() if busy else 'held by a lock with no owner recorded'}; "
                f"rerun when it is done (lock {location}; a crashed holder's lock is released "
                f"{'at once by the OS' if isinstance(lock, _LocalLock) else 'when it expires'})"
            )
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
    stop = threading.Event()
    renewer = threading.Thread(target=lock.keep, args=(holder, ttl, stop), name="lake-lock-renewer", daemon=True)
    renewer.start()
    try:
        yield holder
    finally:
        stop.set()
        renewer.join()
        lock.release()


class _LocalLock:
    def __init__(self, location: str):
        self.path = Path(urlparse(location).path if location.startswith("file:") else location)
        self.fd: int | None = None

    def acquire(self, holder: Holder) -> Holder | None | bool:
        """None when taken; else the holder found (False when the file names none)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _parse(self.path.read_bytes()) or False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder.__dict__).encode("utf-8"), 0)
        self.fd = fd
        return None

    def keep(self, holder: Holder, ttl: timedelta, stop: threading.Event) -> None:
        """Nothing to renew: the OS holds the lock as long as the process lives."""

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file: no holder
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class _S3Lock:
    def __init__(self, conf: Conf, location: str, ttl: timedelta):
        parsed = urlparse(location)
        self.bucket, self.key = parsed.netloc, parsed.path.lstrip("/")
        self.client = s3_client(conf)
        self.extra = encryption_arguments(conf)
        self.etag: str | None = None

    def _put(self, holder: Holder, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        body = json.dumps(holder.__dict__).encode("utf-8")
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **self.extra, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                return False
            raise
        self.etag = answer["ETag"]
        return True

    def acquire(self, holder: Holder) -> Holder | None | bool:
        from botocore.exceptions import ClientError

        if self._put(holder, IfNoneMatch="*"):
            return None
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False  # released between the two calls: the caller tries again
            raise
        current = _parse(found["Body"].read())
        if current is not None and datetime.fromisoformat(current.expires_at) > _now():
            return current
        # Expired (a crashed holder): take it over only if nobody else did since we read it.
        return None if self._put(holder, IfMatch=found["ETag"]) else (current or False)

    def keep(self, holder: Holder, ttl: timedelta, stop: threading.Event) -> None:
        while not stop.wait(ttl.total_seconds() / 3):
            renewed = Holder(**{**holder.__dict__, "expires_at": (_now() + ttl).isoformat(timespec="seconds")})
            if not self._put(renewed, IfMatch=self.etag or ""):
                print(f"lock: s3://{self.bucket}/{self.key} was taken over by another holder; this run no longer holds the lake", flush=True)
                self.etag = None
                return

    def release(self) -> None:
        from botocore.exceptions import ClientError

        if self.etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "NoSuchKey", "412", "404"):
                raise
        self.etag = None


def s3_client(conf: Conf):
    """A boto3 S3 client for the lake's store, from the same s3.* settings S3A uses."""
    import boto3
    from botocore.config import Config

    environ = os.environ
    keys = {
        "aws_access_key_id": environ.get(conf["s3.access_key_env"]) or None,
        "aws_secret_access_key": environ.get(conf["s3.secret_key_env"]) or None,
        "aws_session_token": environ.get(conf["s3.session_token_env"]) or None,
    }
    return boto3.client(
        "s3",
        endpoint_url=conf["s3.endpoint"] or None,
        region_name=conf["s3.region"] or conf["aws.region"],
        use_ssl=conf["s3.ssl_enabled"],
        config=Config(s3={"addressing_style": "path" if conf["s3.path_style_access"] else "auto"}),
        **{name: value for name, value in keys.items() if value},
    )


def encryption_arguments(conf: Conf) -> dict[str, str]:
    """PutObject's encryption arguments matching S3A's (the bucket policy refuses unencrypted uploads)."""
    algorithm = conf["s3.encryption_algorithm"]
    if not algorithm:
        return {}
    arguments = {"ServerSideEncryption": {"SSE-S3": "AES256", "SSE-KMS": "aws:kms"}[algorithm]}
    if algorithm == "SSE-KMS" and conf["s3.encryption_key"]:
        arguments["SSEKMSKeyId"] = conf["s3.encryption_key"]
    return arguments
