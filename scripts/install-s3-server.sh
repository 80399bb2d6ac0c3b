#!/usr/bin/env bash
# Install the S3-compatible server that the S3 tests and `make run-s3` start on 127.0.0.1: MinIO,
# built from source with the Go toolchain (go >= 1.24) through the Go module proxy, pinned below,
# into .tools/bin/ (git-ignored). Idempotent: does nothing when the pinned version is installed.
#
# Licence: the MinIO server is AGPL-3.0. We only run the unmodified binary as a local test tool;
# it is never linked into, shipped with or deployed by this project (docs/s3.md).
set -euo pipefail

# MinIO tags its releases RELEASE.<date>, which Go does not take as versions: pin the commit's
# pseudo-version instead (the last commit of the upstream repository, February 2026).
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
VERSION_FILE="$BIN_DIR/minio.version"

if [[ -x "$BIN_DIR/minio" && -f "$VERSION_FILE" && "$(cat "$VERSION_FILE")" == "$MINIO_VERSION" ]]; then
    echo "minio $MINIO_VERSION already installed in $BIN_DIR"
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "install-s3-server: the 'go' command is missing; install Go 1.24 or newer (https://go.dev/doc/install) and rerun" >&2
    exit 1
fi

start=$SECONDS
mkdir -p "$BIN_DIR"
echo "building minio $MINIO_VERSION with $(go version | cut -d' ' -f3) (a few minutes the first time)..."
# GOTOOLCHAIN=local: build with the installed Go rather than fetching the toolchain go.mod names.
GOBIN="$BIN_DIR" GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false" \
    go install "$MINIO_MODULE@$MINIO_VERSION"
echo "$MINIO_VERSION" > "$VERSION_FILE"
echo "minio $MINIO_VERSION installed in $BIN_DIR in $((SECONDS - start)) s"
