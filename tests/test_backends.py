"""One model, any Keras 3 backend: the same weights predict the same on TensorFlow and on JAX.

Each direction runs the other backend in a child process (a process has one Keras backend):
the shipped model (trained under TensorFlow) predicts a crop of a bundled image under JAX, and a
copy of it trained a few steps under JAX, saved as an artifact there, predicts under this
process's backend. Both must agree within 1e-4 (float32, different kernels).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from lumbo_bids.model.artifact import load_artifact
from lumbo_bids.model.predictor import Predictor
from lumbo_bids.model.selection import SHIPPED_SEGMENTATION
from lumbo_bids.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "ds-spine-mini"
OTHER = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
pytestmark = pytest.mark.skipif(importlib.util.find_spec(OTHER) is None, reason=f"{OTHER} is not installed")

CHILD = """
import sys
import keras
import numpy as np
from lumbo_bids.model.artifact import load_artifact, save_artifact
from lumbo_bids.model.predictor import Predictor

model_dir, crop, out, backend = sys.argv[1:5]
assert keras.backend.backend() == backend, keras.backend.backend()
artifact = load_artifact(model_dir)
stack = np.load(crop)
predictor = Predictor.from_artifact(artifact)
np.save(f"{out}/shipped.npy", predictor.probability(predictor.standardise(stack)))
# a few training steps under this backend, saved as an artifact, predicting
keras.utils.set_random_seed(0)
model = artifact.build_model()
model.compile(optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy")
x = predictor.standardise(stack)[None, :48, :48, :48, None]
model.fit(x, (x > np.percentile(x, 95)).astype("float32"), epochs=1, batch_size=1, verbose=0)
save_artifact(model, f"{out}/trained", artifact.manifest)
predictor = Predictor.from_artifact(load_artifact(f"{out}/trained"))
np.save(f"{out}/trained.npy", predictor.probability(predictor.standardise(stack)))
"""


def _in_other_backend(*args: object) -> None:
    env = {**os.environ, "KERAS_BACKEND": OTHER, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def other(crop) -> Path:
    """The other backend's predictions: ``shipped.npy``, and ``trained/`` + ``trained.npy``."""
    _in_other_backend(SHIPPED_SEGMENTATION, crop, crop.parent, OTHER)
    return crop.parent


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """48 slices of sub-sctTesting's T2w as the network sees them (RPI, 0.5 mm, cropped around
    its manual mask's centerline: :class:`lumbo_bids.preprocess.Preprocessor`)."""
    image = nib.load(DATA / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.nii.gz")
    mask = nib.load(next((DATA / "derivatives" / "labels" / "sub-sctTesting").rglob("*T2w*seg*.nii.gz")))
    case = Preprocessor().run_case(np.asanyarray(image.dataobj), image.affine, np.asanyarray(mask.dataobj))
    middle = int(np.median(np.nonzero(case.mask_stack.any(axis=(0, 1)))[0]))
    path = tmp_path_factory.mktemp("backends") / "crop.npy"
    np.save(path, case.stack[:, :, max(0, middle - 24) : middle + 24])
    return path


def test_shipped_model_predicts_the_same_under_both_backends(crop, other):
    predictor = Predictor.from_artifact(load_artifact(SHIPPED_SEGMENTATION))
    here = predictor.probability(predictor.standardise(np.load(crop)))
    there = np.load(other / "shipped.npy")
    assert here.shape == there.shape and here.max() > 0.5  # the cord is in the block
    np.testing.assert_allclose(here, there, atol=1e-4)


def test_a_model_trained_under_the_other_backend_predicts_the_same_here(crop, other):
    artifact = load_artifact(other / "trained")
    assert artifact.checksum != load_artifact(SHIPPED_SEGMENTATION).checksum  # the weights did change
    predictor = Predictor.from_artifact(artifact)
    here = predictor.probability(predictor.standardise(np.load(crop)))
    np.testing.assert_allclose(here, np.load(other / "trained.npy"), atol=1e-4)
