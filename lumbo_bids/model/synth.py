"""Label-driven synthetic training images, in the spirit of SynthSeg (Billot et al., 2023).

A label map (cord and CSF masks drawn by hand, without their image) becomes a new image every
time it is drawn: each tissue class gets a random intensity and texture, and the domain
randomisation of :mod:`lumbo_bids.model.augment` then deforms, blurs, degrades the resolution,
adds bias and noise. A network trained on such images cannot rely on any one contrast: it must
use the shape of the cord inside the canal.

Classes of a label map (:func:`derive_labels`): 1 cord, 2 CSF, 3 a thin shell outside the canal
(dura, epidural fat), 4 a thicker shell beyond it (bone, ligaments), 5 everything further out;
classes 4 and 5 are split at random into smooth sub-regions when an image is drawn, so that
the background has structure rather than flat rings.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CORD, CSF, SHELL, BONE, OUTER = 1, 2, 3, 4, 5
N_CLASSES = 6  # 0 (outside the field of view) to OUTER


def derive_labels(cord: np.ndarray, csf: np.ndarray, voxel_mm: float = 0.5) -> np.ndarray:
    """Label map (uint8, classes above) from a cord mask and a CSF mask on the same grid.

    Parameters
    ----------
    cord, csf : numpy.ndarray
        3D masks (non-zero is inside); where they overlap, cord wins.
    voxel_mm : float
        Isotropic voxel size, for the shell thicknesses (1.5 mm and 6 mm).

    Returns
    -------
    numpy.ndarray
        uint8 labels 1-5, same shape.
    """
    cord, csf = np.asarray(cord) > 0, np.asarray(csf) > 0
    if cord.shape != csf.shape or cord.ndim != 3:
        raise ValueError(f"cord {cord.shape} and CSF {csf.shape} must be 3D masks of one shape")
    if not cord.any():
        raise ValueError("the cord mask is empty")
    canal = cord | csf
    distance = ndimage.distance_transform_edt(~canal) * voxel_mm
    labels = np.full(cord.shape, OUTER, dtype=np.uint8)
    labels[distance <= 6.0] = BONE
    labels[distance <= 1.5] = SHELL
    labels[csf] = CSF
    labels[cord] = CORD
    return labels


def _split_randomly(labels: np.ndarray, cls: int, parts: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Sub-class index (0..parts-1) of every voxel of class ``cls``, by quantiles of smooth noise."""
    noise = ndimage.gaussian_filter(rng.normal(size=labels.shape), sigma, mode="reflect")
    inside = labels == cls
    sub = np.zeros(labels.shape, dtype=np.int64)
    if inside.any() and parts > 1:
        edges = np.quantile(noise[inside], np.linspace(0, 1, parts + 1)[1:-1])
        sub[inside] = np.searchsorted(edges, noise[inside])
    return sub


def synthesise(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random image of a label map (float32 in about [0, 1], before domain randomisation).

    Every class (and each random sub-region of classes 4 and 5) gets a uniform random mean in
    [0, 1] and a random within-class texture (smoothed Gaussian noise); the result is blurred
    by a random partial-volume kernel.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {labels.shape}")
    codes = labels.astype(np.int64)
    for cls in (BONE, OUTER):
        sub = _split_randomly(labels, cls, int(rng.integers(1, 4)), rng, sigma=float(rng.uniform(2.0, 6.0)))
        codes = np.where(labels == cls, N_CLASSES + (cls - BONE) * 4 + sub, codes)
    n_codes = N_CLASSES + 8
    means = rng.uniform(0.0, 1.0, n_codes).astype(np.float32)
    stds = rng.uniform(0.0, 0.08, n_codes).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32), float(rng.uniform(0.3, 1.5)))
    texture /= max(float(texture.std()), 1e-6)
    image = means[codes] + stds[codes] * texture
    return ndimage.gaussian_filter(image, float(rng.uniform(0.0, 1.0))).astype(np.float32)
