"""scripts/gpu_check.sh end to end on this machine's CPU, with a tiny step count (its smoke test).

On a GPU machine the script fine-tunes on the GPU, then on the CPU, on the JAX backend; here no
GPU is visible, so only the CPU run is made, on the TensorFlow backend (JAX's CPU kernels are
~50x slower for 3D convolutions; the JAX training path is tested in the JAX stage of scripts/test.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu():
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--subjects", "sctTesting", "unf01", "--epochs", "2", "--cpu-steps", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "no GPU visible to tensorflow: CPU run only" in proc.stdout
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert result["backend"] == "tensorflow" and result["device"].startswith("CPU")
    assert result["steps"] == 2 and result["epochs"] == 2 and result["patches_per_s"] > 0
    assert set(result["validation_dice_after"]) == {"sub-sctTesting_T1w", "sub-sctTesting_T2starw", "sub-sctTesting_T2w"}
    assert all(0.5 < d <= 1 for d in [*result["validation_dice_before"].values(), *result["validation_dice_after"].values()])
    assert result["images"]["train"] == ["sub-unf01_T1w", "sub-unf01_T2star", "sub-unf01_T2w"]
    assert f"{result['device']} | {result['patches_per_s']} | None | 0." in proc.stdout  # the summary table
