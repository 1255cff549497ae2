"""Segmentation metrics on binary masks (pure numpy/scipy): Dice, HD95, volumes.

Masks are arrays where non-zero is foreground; two masks compared must share their shape
(the same voxel grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen-Dice coefficient ``2|A∩B| / (|A| + |B|)``; 1.0 when both masks are empty.

    Parameters
    ----------
    a, b : np.ndarray
        Masks of the same shape.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face-neighbour in the background (the array border counts)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks, in mm.

    Surface voxels are foreground voxels with a face-neighbour in the background.  For each
    surface voxel of one mask the Euclidean distance (with ``spacing``) to the nearest surface
    voxel of the other is measured (``scipy.ndimage.distance_transform_edt``); the result is the
    larger of the two directed 95th percentiles (``numpy.percentile``, linear interpolation).

    Parameters
    ----------
    a, b : np.ndarray
        Masks of the same shape.
    spacing : sequence of float
        Voxel size in mm along each axis.

    Returns
    -------
    float
        Distance in mm; 0.0 when both masks are empty, nan when only one is.
    """
    a, b = _pair(a, b)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != a.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must give {a.ndim} positive sizes, got {spacing}")
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    surf_a, surf_b = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~surf_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surf_a, sampling=spacing)
    return float(max(np.percentile(to_b[surf_a], 95), np.percentile(to_a[surf_b], 95)))


def relative_volume_difference(pred: np.ndarray, ref: np.ndarray) -> float:
    """Signed relative volume difference ``(|pred| - |ref|) / |ref|``.

    Parameters
    ----------
    pred, ref : np.ndarray
        Predicted and reference masks of the same shape (same voxel grid).

    Returns
    -------
    float
        0.0 when both are empty, nan when only ``ref`` is.
    """
    pred, ref = _pair(pred, ref)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_ref == 0:
        return 0.0 if n_pred == 0 else float("nan")
    return (n_pred - n_ref) / n_ref


def per_slice_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice of each axial slice ``[:, :, z]``.

    Parameters
    ----------
    a, b : np.ndarray
        3D masks of the same shape.

    Returns
    -------
    np.ndarray
        float64 of length ``shape[2]``; nan where both slices are empty.
    """
    a, b = _pair(a, b)
    if a.ndim != 3:
        raise ValueError(f"expected 3D masks, got shape {a.shape}")
    inter = np.logical_and(a, b).sum(axis=(0, 1)).astype(np.float64)
    total = (a.sum(axis=(0, 1)) + b.sum(axis=(0, 1))).astype(np.float64)
    out = np.full(a.shape[2], np.nan)
    np.divide(2.0 * inter, total, out=out, where=total > 0)
    return out


def volume_mm3(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of a mask in mm³: voxel count times ``|det(affine[:3, :3])|``.

    Parameters
    ----------
    mask : np.ndarray
        3D mask.
    affine : np.ndarray
        4x4 voxel-to-world affine (mm), as in NIfTI.

    Returns
    -------
    float
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    return float(np.count_nonzero(mask)) * abs(float(np.linalg.det(affine[:3, :3])))
