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
# Installs requirements.lock (exact pins of the whole tree) minus what the EMR release already has
# (pyspark, delta-spark, py4j) and what only tests and notebooks need.
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
OUT=${OUT:-dist/fruits-env.tar.gz}
EXCLUDE='^(pyspark|delta-spark|py4j|pytest|moto|nbclient|nbformat|ipykernel|markdown)=='

dnf install -y "$PYTHON" "$PYTHON-pip" tar gzip >/dev/null

tools=$(mktemp -d)
"$PYTHON" -m venv "$tools"
"$tools/bin/pip" install --quiet venv-pack==0.2.0

env=$(mktemp -d)/fruits-env
"$PYTHON" -m venv --copies "$env"
grep -v -E "$EXCLUDE" requirements.lock > "$env.requirements.txt"
"$env/bin/pip" install --quiet --no-cache-dir -r "$env.requirements.txt"

mkdir -p "$(dirname "$OUT")"
"$tools/bin/venv-pack" -p "$env" -o "$OUT" --force
echo "built $OUT ($(du -h "$OUT" | cut -f1)); upload it with: python -m deploy package"
