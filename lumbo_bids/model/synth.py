"""Label-driven synthetic training images, in the spirit of SynthSeg (Billot et al., 2023).

A label map (cord and CSF masks drawn by hand, without their image) becomes a new image every
time it is drawn: each tissue class gets a random intensity and texture, and the domain
randomisation of :mod:`lumbo_bids.model.augment` then deforms, blurs, degrades the resolution,
adds bias and noise. A network trained on such images cannot rely on any one contrast: it must
use the shape of the cord inside the canal.

Classes of a label map (:func:`derive_labels`): 1 cord, 2 CSF, 3 a thin shell outside the canal
(dura, epidural fat), 4 a thicker shell beyond it (bone, ligaments), 5 everything further out,
6 nerve roots; classes 4 and 5 are split at random into smooth sub-regions when an image is
drawn, so that the background has structure rather than flat rings.

The label maps we have are cervical: none shows the conus medullaris or the cauda equina, the
very anatomy of the lumbar canal where a network must learn that the cord *ends* and that the
nerve roots below it (dark strands in bright CSF on T2w, often as dark as the cord) are not
cord. :func:`lumbar_phantom` draws such label maps procedurally: a canal and a cord that tapers
to a conus tip at a random level, with nerve roots around the conus and filling the canal
below it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CORD, CSF, SHELL, BONE, OUTER, ROOTS = 1, 2, 3, 4, 5, 6
N_CLASSES = 7  # 0 (outside the field of view) to ROOTS


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
    return _with_shells(cord | csf, voxel_mm, {CSF: csf, CORD: cord})


def _with_shells(canal: np.ndarray, voxel_mm: float, inside: dict[int, np.ndarray]) -> np.ndarray:
    """Shells around ``canal`` (1.5 mm: SHELL, 6 mm: BONE, OUTER beyond), then ``inside`` in order."""
    distance = ndimage.distance_transform_edt(~canal) * voxel_mm
    labels = np.full(canal.shape, OUTER, dtype=np.uint8)
    labels[distance <= 6.0] = BONE
    labels[distance <= 1.5] = SHELL
    for cls, where in inside.items():
        labels[where] = cls
    return labels


def _smooth_walk(n: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A slowly varying curve of ``n`` values within about ``+-amplitude``."""
    walk = ndimage.gaussian_filter1d(rng.normal(size=n), sigma=max(2.0, n / 6), mode="nearest")
    peak = np.abs(walk).max()
    return walk * (amplitude / peak) if peak > 0 else walk


def lumbar_phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, voxel_mm: float = 0.5, dorsal_roots: float = 0.0
) -> np.ndarray:
    """A random label map of the lumbar canal: conus medullaris, cauda equina, CSF, shells.

    The canal (an ellipse of 6-9 x 5-8 mm semi-axes) and the cord (3-5 x 2.5-4 mm) follow smooth
    random courses along z; the cord tapers over 8-25 mm to a conus tip at a random level
    (in a quarter of the phantoms above the field of view: roots only) and 10-30 nerve roots
    (0.4-1 mm radius) run in the CSF around the conus and below it: scattered over the canal,
    or (with probability ``dorsal_roots``) gathered in a bundle of 1-3 mm spread against
    the posterior wall, where they settle in a supine patient and where, on a T2w image, they
    look most like a continuation of the cord. With ``dorsal_roots`` 0 the random stream (and so
    the phantom of a seed) is the one of the recipe before dorsal bundles existed.

    Returns
    -------
    numpy.ndarray
        uint8 labels (classes of this module), ``shape``; the cord is ``labels == CORD``.
    """
    if not 0.0 <= dorsal_roots <= 1.0:
        raise ValueError(f"dorsal_roots must be in [0, 1], got {dorsal_roots}")
    nx, ny, nz = shape
    mm = 1.0 / voxel_mm
    xs = np.arange(nx, dtype=np.float32)[:, None, None]
    ys = np.arange(ny, dtype=np.float32)[None, :, None]
    cx = (nx - 1) / 2 + _smooth_walk(nz, 3 * mm, rng)
    cy = (ny - 1) / 2 + _smooth_walk(nz, 3 * mm, rng)
    canal_r = rng.uniform(6, 9) * mm, rng.uniform(5, 8) * mm
    canal = ((xs - cx) / canal_r[0]) ** 2 + ((ys - cy) / canal_r[1]) ** 2 <= 1.0
    tip = rng.uniform(0.15, 0.7) * nz if rng.random() < 0.75 else nz + 1.0
    taper = rng.uniform(8, 25) * mm
    z = np.arange(nz, dtype=np.float32)
    scale = np.sqrt(np.clip((z - tip) / taper, 0.0, 1.0))
    cord_r = rng.uniform(3, 5) * mm, rng.uniform(2.5, 4) * mm
    ccx = cx + _smooth_walk(nz, 1 * mm, rng)
    ccy = cy + rng.uniform(-1.5, 1.5) * mm + _smooth_walk(nz, 1 * mm, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ellipse = ((xs - ccx) / (cord_r[0] * scale)) ** 2 + ((ys - ccy) / (cord_r[1] * scale)) ** 2
    cord = (ellipse <= 1.0) & (scale > 0.05) & canal
    roots = np.zeros(shape, dtype=bool)
    top = min(nz, tip + taper + rng.uniform(5, 40) * mm)
    dorsal = dorsal_roots > 0 and rng.random() < dorsal_roots
    if dorsal:  # a bundle against the posterior wall (-y in RPI), as the roots settle in a supine patient
        where, depth, spread = rng.uniform(-0.5, 0.5) - np.pi / 2, rng.uniform(0.3, 0.7), rng.uniform(1.0, 3.0) * mm
        bx, by = depth * canal_r[0] * np.cos(where), depth * canal_r[1] * np.sin(where)  # the bundle's centre
    for _ in range(int(rng.integers(10, 31))):
        if dorsal:
            offset = rng.normal(0.0, spread, 2)
            rx = cx + bx + offset[0] + _smooth_walk(nz, 0.5 * mm, rng)
            ry = cy + by + offset[1] + _smooth_walk(nz, 0.5 * mm, rng)
        else:
            angle, radius = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0.05, 0.8))
            rx = cx + radius * canal_r[0] * np.cos(angle) + _smooth_walk(nz, 1.5 * mm, rng)
            ry = cy + radius * canal_r[1] * np.sin(angle) + _smooth_walk(nz, 1.5 * mm, rng)
        extent = z < top * rng.uniform(0.7, 1.0)
        roots |= (((xs - rx) ** 2 + (ys - ry) ** 2) <= (rng.uniform(0.4, 1.0) * mm) ** 2) & extent & canal
    return _with_shells(canal, voxel_mm, {CSF: canal, ROOTS: roots & ~cord, CORD: cord})


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
    [0, 1] and a random within-class texture (smoothed Gaussian noise); nerve roots get the
    cord's intensity half of the time (only their shape tells them apart); the result is
    blurred by a random partial-volume kernel.
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
    if rng.random() < 0.5:
        means[ROOTS] = means[CORD]
    stds = rng.uniform(0.0, 0.08, n_codes).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32), float(rng.uniform(0.3, 1.5)))
    texture /= max(float(texture.std()), 1e-6)
    image = means[codes] + stds[codes] * texture
    return ndimage.gaussian_filter(image, float(rng.uniform(0.0, 1.0))).astype(np.float32)
