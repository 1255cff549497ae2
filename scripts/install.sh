#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned, tested
# dependencies. Idempotent: reinstalls only when pyproject.toml changed.
# Usage: scripts/install.sh [cpu|gpu]   (default cpu: tensorflow-cpu; gpu: tensorflow[and-cuda])
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOUR=${1:-cpu}
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.lumbo_bids-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)-$FLAVOUR"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[install] installing lumbo_bids[$FLAVOUR,test] (pinned versions from pyproject.toml)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$FLAVOUR,test]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import lumbo_bids, tensorflow, nipype, bids" || { echo "[install] failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
echo "[install] ready: $(.venv/bin/lumbo-bids --version)"
