#!/usr/bin/env bash
# GPU check of the training stack on a machine without internet that has JAX (or PyTorch) but
# no TensorFlow: fine-tunes the shipped model on the bundled data on the GPU, then on the CPU,
# on the JAX backend (scripts/gpu_check.py), and prints patches/s, peak GPU memory, validation
# Dice and the GPU/CPU ratio. Under 5 minutes on one GPU; what it brings: the repository (~20 MB)
# and the wheels of .gpu_wheels/ (keras and what that machine lacks, ~3 MB).
#
#   bash scripts/gpu_check.sh prepare             # here (PyPI reachable): fetch the wheels into .gpu_wheels/
#   bash scripts/gpu_check.sh [--steps N] [...]   # there: install the carried wheels in /tmp, run the check
#
# Arguments go to scripts/gpu_check.py (GPU run); the CPU run uses --cpu-steps (default 5) batches
# per epoch. PYTHON picks the interpreter (default python3); GPU_CHECK_BACKEND the Keras backend (jax).
# Without a GPU only the CPU run is made (the smoke test: tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=.gpu_wheels
if [ "${1:-}" = prepare ]; then
  # the GPU image's Python is 3.12 (numpy, scipy, h5py, rich, absl-py, ml-dtypes, jax are there)
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" keras==3.15.1 namex==0.1.0 optree==0.20.0 nibabel==5.4.2 2>&1 | grep -v "is ignored" || true
  ls -la "$WHEELS"; du -sh "$WHEELS"
  exit 0
fi
CPU_STEPS=5
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-steps) CPU_STEPS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
# the carried wheels, where this interpreter lacks keras or nibabel (here the venv has them)
if ! "$PYTHON" -c "import keras, nibabel" >/dev/null 2>&1 && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  SITE=/tmp/lumbo_gpu_site
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=${GPU_CHECK_BACKEND:-jax} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
HAS_GPU=$("$PYTHON" -c "from lumbo_bids.training.devices import accelerators; print(len(accelerators()))" 2>/dev/null || echo 0)
GPU_JSON=""
if [ "$HAS_GPU" -gt 0 ]; then
  echo "[gpu_check] $KERAS_BACKEND on $HAS_GPU GPU(s)"
  GPU_JSON=$("$PYTHON" scripts/gpu_check.py "${ARGS[@]}" | tail -1)
  echo "$GPU_JSON"
else
  echo "[gpu_check] no GPU visible to $KERAS_BACKEND: CPU run only"
fi
echo "[gpu_check] $KERAS_BACKEND on the CPU ($CPU_STEPS steps per epoch)"
# the same arguments, fewer steps (the option given last wins in argparse)
CPU_JSON=$(JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES="" "$PYTHON" scripts/gpu_check.py "${ARGS[@]}" --steps "$CPU_STEPS" | tail -1)
echo "$CPU_JSON"
"$PYTHON" - "$GPU_JSON" "$CPU_JSON" <<'PY'
import json, sys
gpu, cpu = (json.loads(a) if a else None for a in sys.argv[1:3])
rows = [("device", "patches/s", "peak GPU MiB", "val Dice before -> after", "seconds")]
for r in (gpu, cpu):
    if r:
        dice = ", ".join(f"{r['validation_dice_before'][k]:.3f} -> {v:.3f}" for k, v in r["validation_dice_after"].items())
        rows.append((r["device"], str(r["patches_per_s"]), str(r["peak_gpu_memory_mib"]), dice, str(r["total_s"])))
for row in rows:
    print(" | ".join(row))
if gpu and cpu:
    print(f"GPU/CPU training throughput: {gpu['patches_per_s'] / cpu['patches_per_s']:.1f}x")
PY
