#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned, tested
# dependencies. Idempotent: reinstalls only when pyproject.toml changed.
# Usage: scripts/install.sh [cpu|gpu]   (default cpu: tensorflow-cpu; gpu: tensorflow[and-cuda])
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOUR=${1:-cpu}
PYTHON=${PYTHON:-python3}
STARTED=$SECONDS
say() { echo "[install] $*"; }
# quiet pip; its notes about the machine's extra package indexes ("... is ignored") are dropped
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.lumbo_bids-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)-$FLAVOUR"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  say "installing lumbo_bids[$FLAVOUR,test] with the pinned versions of pyproject.toml (TensorFlow, Keras,"
  say "Nipype, pybids, the BIDS validator...): usually 1-2 minutes and 2.6 GB in .venv, silent until done"
  pip_install --upgrade "pip>=23"
  pip_install -e ".[$FLAVOUR,test]"
  say "checking that it imports"
  .venv/bin/python -c "from lumbo_bids.cli import console; console.quiet_tensorflow(0); import lumbo_bids, tensorflow, nipype, bids" ||
    { echo "[install] failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
say "ready in $((SECONDS - STARTED)) s: $(.venv/bin/lumbo-bids --version)"
