"""Build the code archive and upload code, Python environment and dataset, skipping what is there.

The code archive is reproducible (sorted entries, fixed timestamps, no bytecode): the same sources
give the same bytes, hence the same MD5, so an unchanged archive is not uploaded again.

An object counts as already uploaded when its size matches and either its ETag is the local MD5
(single-part upload, SSE-S3) or the MD5 we stored in its metadata matches. The second check exists
because S3's ETag is not an MD5 for SSE-KMS objects nor for multipart uploads.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deploy.executor import DeployError, Executor
from deploy.settings import Settings
from pipelines.config import PROJECT_ROOT, resolve_location

ENTRY_SCRIPT = Path(__file__).with_name("entry.py")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int
    md5: str


def md5_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def local_file(path: Path, key: str) -> LocalFile:
    return LocalFile(path=path, key=key, size=path.stat().st_size, md5=md5_of(path))


def build_code_archive(source_dirs: list[Path], target: Path) -> list[str]:
    """Zip the folders (paths relative to their parent); returns the folders that were absent."""
    missing = [str(d) for d in source_dirs if not d.is_dir()]
    files = sorted(
        (path, path.relative_to(d.parent).as_posix())
        for d in source_dirs
        if d.is_dir()
        for path in d.rglob("*")
        if path.is_file() and path.suffix != ".pyc" and not _SKIPPED_PARTS.intersection(path.parts)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return missing


def upload_decision(local: LocalFile, remote: dict | None) -> str:
    """'upload', 'skip', or 'check' (same size, ETag not an MD5: compare the stored MD5 metadata)."""
    if remote is None or remote["Size"] != local.size:
        return "upload"
    if remote["ETag"].strip('"') == local.md5:
        return "skip"
    return "check"


def extra_args(s: Settings, local: LocalFile) -> dict:
    """Upload arguments: the bucket's encryption asked explicitly (the bucket policy demands it)."""
    args: dict = {"ServerSideEncryption": s.sse, "Metadata": {"md5": local.md5}}
    if s.kms_key:
        args["SSEKMSKeyId"] = s.kms_key
    return args


def sync(ex: Executor, s: Settings, files: list[LocalFile], prefix: str) -> tuple[int, int]:
    """Upload the files whose copy under `prefix` differs; returns (uploaded, skipped)."""
    remote = {obj["Key"]: obj for obj in ex.pages("s3", "list_objects_v2", "Contents", Bucket=s.bucket, Prefix=f"{prefix}/")}
    uploaded = skipped = 0
    for local in files:
        decision = upload_decision(local, remote.get(local.key))
        if decision == "check":
            head = ex.call("s3", "head_object", Bucket=s.bucket, Key=local.key)
            decision = "skip" if head["Metadata"].get("md5") == local.md5 else "upload"
        if decision == "skip":
            skipped += 1
            continue
        ex.call(
            "s3",
            "upload_file",
            Filename=str(local.path),
            Bucket=s.bucket,
            Key=local.key,
            ExtraArgs=extra_args(s, local),
        )
        uploaded += 1
    return uploaded, skipped


def code_uris(s: Settings) -> dict[str, str]:
    """Where the jobs find their code and environment in S3 (used by the run plans)."""
    conf = s.conf
    return {
        "code_archive": s.uri(s.code_key(conf["aws.package.code_archive"])),
        "entry": s.uri(s.code_key(ENTRY_SCRIPT.name)),
        "env_archive": s.uri(s.code_key(f"env/{Path(conf['aws.package.env_archive']).name}")),
    }


def local_weights(s: Settings) -> Path:
    """The MobileNetV2 no-top weights file here, found as silver finds it locally (Keras cache, seed
    copy, or Keras' public download), for the driver on EMR, which reads silver.weights_file in S3."""
    from pipelines import features

    conf = s.conf
    located = features.WeightsSettings(
        choice="imagenet", keras_home=conf.path("silver.keras_home"), seed_dir=conf.path("silver.model_seed_dir"),
        weights_file="", weights_url=conf["silver.weights_url"], download=True,
    )  # fmt: skip
    try:
        return features.locate_weights_file(located)[0]
    except features.WeightsUnavailable as exc:
        raise DeployError(f"the MobileNetV2 weights to upload to silver.weights_file: {exc}") from exc


def package(ex: Executor, s: Settings, with_env: bool = True, with_data: bool = True) -> None:
    conf = s.conf
    dist = Path(resolve_location(conf["aws.package.dist_dir"]))
    archive = dist / conf["aws.package.code_archive"]
    missing = build_code_archive([PROJECT_ROOT / d for d in conf["aws.package.code_dirs"]], archive)
    for folder in missing:
        ex.say(f"note: {folder} does not exist yet; the code archive goes without it (aws.package.code_dirs)")
    ex.say(f"built {archive.relative_to(PROJECT_ROOT) if archive.is_relative_to(PROJECT_ROOT) else archive}")

    files = [
        local_file(archive, s.code_key(archive.name)),
        local_file(ENTRY_SCRIPT, s.code_key(ENTRY_SCRIPT.name)),
    ]
    if with_env:
        env = Path(resolve_location(conf["aws.package.env_archive"]))
        if not env.is_file():
            raise DeployError(
                f"aws.package.env_archive '{env}' does not exist: build it in Amazon Linux 2023 with "
                f"deploy/build_env.sh (docs/deploy.md, 'Python environment'), or pass --skip-env to upload the rest"
            )
        files.append(local_file(env, s.code_key(f"env/{env.name}")))
    uploaded, skipped = sync(ex, s, files, s.code_prefix)
    ex.say(f"code: {uploaded} uploaded, {skipped} already there")

    if s.weights_key:
        weights = local_file(local_weights(s), s.weights_key)
        uploaded, _ = sync(ex, s, [weights], s.weights_key.rsplit("/", 1)[0])
        ex.say(f"weights: {'uploaded' if uploaded else 'already there'} ({s.uri(s.weights_key)} from {weights.path})")

    if with_data:
        source = Path(resolve_location(conf["aws.package.dataset_source"]))
        if not source.is_dir():
            raise DeployError(
                f"aws.package.dataset_source '{source}' is not a folder: point it at the images to upload "
                f"(--set aws.package.dataset_source=...), or pass --skip-data"
            )
        data = [
            local_file(path, f"{s.input_prefix}/{path.relative_to(source).as_posix()}")
            for path in sorted(source.rglob("*"))
            if path.is_file()
        ]
        uploaded, skipped = sync(ex, s, data, s.input_prefix)
        ex.say(f"dataset: {uploaded} uploaded, {skipped} already there ({len(data)} files from {source})")
