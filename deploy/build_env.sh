#!/usr/bin/env bash
# Builds dist/fruits-env.tar.gz: the Python environment the EMR jobs run in (aws.package.env_archive),
# shipped with spark.archives=...#environment and used through PYSPARK_PYTHON=./environment/bin/python.
#
# Run it inside Amazon Linux 2023, the OS of EMR's nodes and Serverless workers, so that compiled
# wheels (TensorFlow, Pillow, pyarrow) match their glibc and the venv's interpreter path exists there:
#
#   docker run --rm --platform linux/amd64 -v "$PWD":/src -w /src amazonlinux:2023 bash deploy/build_env.sh
#
# For Graviton (aws.serverless.architecture ARM64, m6g instances) use --platform linux/arm64.
#
# `bash deploy/build_env.sh --host` builds the same archive with this machine's Python and no OS
# packages: the archive then runs only where that interpreter exists at the same path (venv-pack
# keeps the base interpreter's path), which is what `make rehearse` needs for its local cluster.
#
# Installs requirements.lock (exact pins of the whole tree, installed without resolving again) minus
# what the EMR release provides on the job's PYTHONPATH (pyspark, py4j) and what only tests,
# notebooks and the rehearsal need. delta-spark stays: pipelines/lake.py and pipelines/catalog.py
# import its Python API (`delta.tables`), which the release ships as jars only.
# Variables: PYTHON (interpreter, default python3.11), OUT (archive path), COMPRESS_LEVEL (gzip 0-9).
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
OUT=${OUT:-dist/fruits-env.tar.gz}
COMPRESS_LEVEL=${COMPRESS_LEVEL:-4}
EXCLUDE='^(pyspark|py4j|pytest|pytest-timeout|moto|nbclient|nbformat|ipykernel|markdown|minio|venv-pack)=='

if [[ "${1:-}" == "--host" ]]; then
    command -v "$PYTHON" >/dev/null || { echo "build_env.sh: $PYTHON not found; set PYTHON=<python3.11 interpreter>" >&2; exit 1; }
else
    dnf install -y "$PYTHON" "$PYTHON-pip" tar gzip >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet --disable-pip-version-check venv-pack==0.2.0

env="$work/fruits-env"
"$PYTHON" -m venv --copies "$env"
grep -v -i -E "$EXCLUDE" requirements.lock | grep -v '^#' > "$work/requirements.txt"
"$env/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$work/requirements.txt"

mkdir -p "$(dirname "$OUT")"
"$work/tools/bin/venv-pack" -p "$env" -o "$OUT" --force --compress-level "$COMPRESS_LEVEL"
echo "built $OUT ($(du -h "$OUT" | cut -f1)); upload it with: python -m deploy package"
