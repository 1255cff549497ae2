#!/usr/bin/env bash
# Install (if needed), lint (ruff check + format check, ~1 s), then run the whole test suite.
# Arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check --quiet . || { echo "[lint] ruff check failed (fix: .venv/bin/ruff check --fix .)" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "[lint] files need formatting (fix: .venv/bin/ruff format .)" >&2; exit 1; }
echo "[lint] ruff clean"
exec .venv/bin/python -m pytest "$@"
