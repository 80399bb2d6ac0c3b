"""The only place that talks to AWS: each call is either made or, in a dry run, printed.

Keeping every boto3 call behind `Executor.call` is what makes `--dry-run` trustworthy: a command
cannot reach AWS by another path, and the tests can check that a dry run creates no client at all.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TextIO

import boto3
from botocore.exceptions import ClientError


class DeployError(RuntimeError):
    """A problem the user can fix; the message names the setting or resource and what to do."""


class Pending(str):
    """What AWS would have answered, in a dry run: a readable placeholder such as `<emr.run_job_flow:JobFlowId>`.

    Later requests that embed an answer (a cluster id, a role ARN) still print in full, with the
    placeholder where the value would be. Indexing by a key gives the placeholder of that field.
    """

    def __new__(cls, source: str) -> "Pending":
        return super().__new__(cls, f"<{source}>")

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return Pending(f"{self[1:-1]}:{key}")
        return super().__getitem__(key)


class Executor:
    """Makes or prints AWS calls in one region.

    `client_factory(service, region)` defaults to boto3; clients are created lazily, so a dry run
    never needs credentials.
    """

    def __init__(
        self,
        region: str,
        dry_run: bool,
        out: TextIO | None = None,
        client_factory: Callable[[str, str], Any] | None = None,
    ):
        self.region = region
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self._client_factory = client_factory or (lambda service, region: boto3.client(service, region_name=region))
        self._clients: dict[str, Any] = {}
        self.last_call = ""  # service.operation of the latest call, named when it fails

    def client(self, service: str) -> Any:
        if self.dry_run:
            raise AssertionError("a dry run must not create AWS clients")
        if service not in self._clients:
            self._clients[service] = self._client_factory(service, self.region)
        return self._clients[service]

    def call(self, service: str, operation: str, tolerate: tuple[str, ...] = (), **params: Any) -> Any:
        """Make (or print) one call; an error whose code is in `tolerate` returns None instead.

        `tolerate` is how provisioning stays idempotent: "already exists" is the state we want.
        """
        if self.dry_run:
            self.say(f"[dry-run] {service}.{operation} {json.dumps(params, default=str)}")
            return Pending(f"{service}.{operation}")
        self.say(f"[aws] {service}.{operation}")
        self.last_call = f"{service}.{operation}"
        try:
            return getattr(self.client(service), operation)(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in tolerate:
                self.say(f"      ({exc.response['Error']['Code']}: kept as is)")
                return None
            raise

    def pages(self, service: str, operation: str, result_key: str, **params: Any) -> list:
        """All items of a paginated listing (an empty list in a dry run, after printing the call)."""
        if self.dry_run:
            self.call(service, operation, **params)
            return []
        self.say(f"[aws] {service}.{operation} (all pages)")
        self.last_call = f"{service}.{operation}"
        items: list = []
        for page in self.client(service).get_paginator(operation).paginate(**params):
            items.extend(page.get(result_key, []))
        return items

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)
