"""A conus test with a known answer: held-out conus phantoms in fixed, plain contrasts.

The real images with a manual mask are cervical but one (``sub-PAM50small``), so the cord's end
is measured on two images only. Here it is measured on many: :func:`bench_phantom` draws a
:func:`lumbo_bids.training.synth.conus_phantom` whose conus tip lies inside the field of view (the
label of the cord ends exactly there), in one of three root layouts (no roots; roots spread over
the canal; roots and cord settled dorsally, as in a supine patient), and :func:`render` gives it
a plain T2w-like or T1w-like contrast (one intensity per class, the roots as dark or bright as the
cord, a little blur and noise). A network that learnt what the phantoms teach ends its mask at
the tip in all of them; :func:`end_scores` says how far from it it ends.

The seeds are not those of any training run (training phantoms come from the run's seed), and the
contrasts are not random, so this is a check of what the recipe teaches, not a held-out set of
real anatomy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lumbo_bids.metrics import dice
from lumbo_bids.training import synth

#: Class means of the plain contrasts (classes of :mod:`lumbo_bids.training.synth`): on T2w the cord
#: and roots are dark in bright CSF, on T1w they are brighter than the dark CSF.
CONTRASTS = {
    "T2w": {synth.CORD: 0.3, synth.ROOTS: 0.3, synth.CSF: 0.9, synth.SHELL: 0.15, synth.BONE: 0.5, synth.OUTER: 0.4},
    "T1w": {synth.CORD: 0.6, synth.ROOTS: 0.6, synth.CSF: 0.15, synth.SHELL: 0.8, synth.BONE: 0.45, synth.OUTER: 0.5},
}
#: Root layouts: keyword arguments of :func:`lumbo_bids.training.synth.conus_phantom`.
LAYOUTS = {
    "none": {"n_roots": (0, 0), "dorsal_roots": 0.0},
    "spread": {"n_roots": (20, 40), "dorsal_roots": 0.0},
    "dorsal": {"n_roots": (20, 40), "dorsal_roots": 1.0, "dorsal_cord": 1.0},
}
#: Where the tip may lie (share of the stack from its bottom) and how much cord must lie above it (mm).
TIP_RANGE = (0.2, 0.6)
MIN_CORD_MM = 40.0
#: Above the tip, the length over which :func:`end_scores` measures the end's Dice (mm).
END_MM = 30.0


def bench_phantom(seed: int, layout: str, shape: tuple[int, int, int] = (64, 64, 300), voxel_mm: float = 0.5) -> np.ndarray:
    """The conus phantom of ``seed`` in ``layout`` (:data:`LAYOUTS`) whose tip lies within
    :data:`TIP_RANGE` of the stack with at least :data:`MIN_CORD_MM` of cord above it: phantoms of
    the stream are drawn until one does (the same phantom for the same arguments)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown root layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        labels = synth.conus_phantom(shape, rng, voxel_mm=voxel_mm, **LAYOUTS[layout])
        z = np.flatnonzero((labels == synth.CORD).any(axis=(0, 1)))
        if z.size and TIP_RANGE[0] * shape[2] <= z[0] <= TIP_RANGE[1] * shape[2] and z.size * voxel_mm >= MIN_CORD_MM:
            return labels
    raise RuntimeError(f"no conus phantom of seed {seed} has its tip in view")  # pragma: no cover


def render(labels: np.ndarray, contrast: str, seed: int, blur_voxels: float = 0.6, noise: float = 0.02) -> np.ndarray:
    """A plain image of ``labels`` (float32): one mean per class (:data:`CONTRASTS`), a Gaussian
    blur of ``blur_voxels`` (partial volume), Gaussian noise of ``noise`` (seeded)."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {sorted(CONTRASTS)}")
    means = np.zeros(synth.N_CLASSES, dtype=np.float32)
    for cls, value in CONTRASTS[contrast].items():
        means[cls] = value
    image = ndimage.gaussian_filter(means[np.asarray(labels, dtype=np.int64)], blur_voxels)
    return (image + np.random.default_rng(seed).normal(0.0, noise, image.shape)).astype(np.float32)


def end_scores(predicted: np.ndarray, cord: np.ndarray, resolution: float) -> dict[str, float]:
    """How a predicted mask ends against the phantom's cord (axis 2 inferior -> superior).

    ``end_gap_mm``: the predicted lowest slice minus the cord's (+: stops above the tip, -: marks
    roots or filum below it; NaN for an empty prediction); ``below_tip_mm3``: predicted volume
    below the tip (not cord); ``end_dice``: Dice over the slices from the tip up to :data:`END_MM`
    above it; ``dice``: over the whole stack.
    """
    predicted, cord = np.asarray(predicted) > 0, np.asarray(cord) > 0
    if predicted.shape != cord.shape or cord.ndim != 3:
        raise ValueError(f"prediction {predicted.shape} and cord {cord.shape} must be the same 3D shape")
    if not cord.any():
        raise ValueError("the phantom has no cord")
    tip = int(np.flatnonzero(cord.any(axis=(0, 1)))[0])
    lowest = np.flatnonzero(predicted.any(axis=(0, 1)))
    top = tip + int(round(END_MM / resolution))

    return {
        "end_gap_mm": float((lowest[0] - tip) * resolution) if lowest.size else float("nan"),
        "below_tip_mm3": float(predicted[..., :tip].sum()) * resolution**3,
        "end_dice": dice(predicted[..., tip:top], cord[..., tip:top]),
        "dice": dice(predicted, cord),
    }
