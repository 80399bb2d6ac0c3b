"""The local S3 server's binary for a pytest fixture: skipped where it is not installed, failed under CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehearsal.s3_server import S3ServerError, server_binary


def server_binary_or_skip() -> Path:
    """The MinIO binary, or a skip naming the command to install it (a failure under CI=true)."""
    try:
        return server_binary()
    except S3ServerError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
