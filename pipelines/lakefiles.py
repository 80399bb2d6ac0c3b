"""The lake's files read outside Spark: local folders and s3a:// through pyarrow's file systems.

Why a module of its own: the Spark stages reach the lake through Hadoop's FileSystem, which needs a
JVM; the prediction path (pipelines/predict.py, the `serving` package) must answer a photo in
milliseconds without one. Everything it reads (the classifier bundle, gold's Parquet export, a
lake image's source file) goes through here, so the one translation from the conf's locations
(`file:/...`, plain paths, `s3a://bucket/key`) and `s3.*` settings to pyarrow lives in one place.

The S3 file system is built from the same `s3.*` settings as S3A (pipelines/session.py): endpoint,
region, path-style access, TLS, and credentials from the environment variables whose NAMES the conf
gives; with those unset, pyarrow's default AWS chain (instance or task role) applies, as S3A's does.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from pyarrow import fs as pafs

from pipelines.config import Conf

_S3_SCHEMES = ("s3a", "s3", "s3n")


class LakeFiles:
    """Read access to lake locations named as the conf and the tables name them."""

    def __init__(self, conf: Conf):
        self._conf = conf
        self._s3: pafs.FileSystem | None = None
        self._local = pafs.LocalFileSystem()

    def resolve(self, location: str) -> tuple[pafs.FileSystem, str]:
        """The file system holding `location` and the path to give it."""
        parsed = urlparse(location)
        if parsed.scheme in _S3_SCHEMES:
            return self._s3_filesystem(), f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        if parsed.scheme == "file":
            return self._local, unquote(parsed.path)
        if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme would be a Windows drive
            raise ValueError(f"'{location}' uses the scheme {parsed.scheme}:// that the lake reader does not know (local paths, file:, s3a:)")
        return self._local, location

    def read_bytes(self, location: str) -> bytes:
        """The whole file; FileNotFoundError when it is not there (or is a folder)."""
        filesystem, path = self.resolve(location)
        if filesystem.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(f"'{location}' is not a file")
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    def exists(self, location: str) -> bool:
        filesystem, path = self.resolve(location)
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def files(self, folder: str, recursive: bool = False) -> list[str]:
        """Files under `folder` as locations of the same form (none when the folder is absent)."""
        filesystem, path = self.resolve(folder)
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        prefix = folder.rstrip("/")
        return sorted(
            f"{prefix}/{info.path[len(path.rstrip('/')) + 1:]}" for info in infos if info.type == pafs.FileType.File
        )

    def _s3_filesystem(self) -> pafs.FileSystem:
        if self._s3 is None:
            self._s3 = pafs.S3FileSystem(**s3_options(self._conf, os.environ))
        return self._s3


def s3_options(conf: Conf, environ: os._Environ | dict) -> dict:
    """pyarrow.fs.S3FileSystem keyword arguments from the `s3.*` settings (pure, for the tests)."""
    options: dict = {}
    access, secret = environ.get(conf["s3.access_key_env"]), environ.get(conf["s3.secret_key_env"])
    if access and secret:
        options.update(access_key=access, secret_key=secret)
        token = environ.get(conf["s3.session_token_env"])
        if token:
            options["session_token"] = token
    if conf["s3.region"]:
        options["region"] = conf["s3.region"]
    endpoint = conf["s3.endpoint"]
    options["scheme"] = "https" if conf["s3.ssl_enabled"] else "http"
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"{options['scheme']}://{endpoint}")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
        # pyarrow addresses buckets in the path whenever an endpoint is given; S3A's default
        # (s3.path_style_access false) is virtual-host addressing.
        options["force_virtual_addressing"] = not conf["s3.path_style_access"]
    return options
