#!/usr/bin/env bash
# Install (if needed), lint (ruff check + format check, module and function sizes, the import graph: no cycle, layers kept; ~2 s), then run the whole test suite on the
# TensorFlow backend and, after it, the training/inference/artifact tests on the JAX backend
# (the "JAX stage", ~2 min: the same code on another Keras 3 backend; LUMBO_SKIP_JAX=1 skips it).
# Arguments go to pytest instead (one run, the default backend), e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check --quiet . || { echo "[lint] ruff check failed (fix: .venv/bin/ruff check --fix .)" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "[lint] files need formatting (fix: .venv/bin/ruff format .)" >&2; exit 1; }
echo "[lint] ruff clean"
.venv/bin/python scripts/check_sizes.py || { echo "[lint] a module or function is too long (see above)" >&2; exit 1; }
.venv/bin/python scripts/import_graph.py --quiet || { echo "[lint] import cycle or layer broken (see above; the graph: python scripts/import_graph.py)" >&2; exit 1; }
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
if [ "${LUMBO_SKIP_JAX:-0}" = 1 ]; then
  echo "[test] JAX stage skipped (LUMBO_SKIP_JAX=1)"
  exit 0
fi
echo "[test] JAX stage: the fast training, inference and artifact tests on KERAS_BACKEND=jax"
STARTED=$SECONDS
KERAS_BACKEND=jax .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider \
  tests/test_training.py tests/test_dataset.py tests/test_artifact.py tests/test_predictor.py tests/test_ensemble.py tests/test_distil.py \
  -k "not test_validation_dice_is_the_participant_levels_dice"  # 2 min on JAX's CPU kernels, and covered by test_backends
echo "[test] JAX stage passed in $((SECONDS - STARTED)) s"
