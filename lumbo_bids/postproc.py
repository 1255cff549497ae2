"""Post-processing of a spinal cord probability map into a clean binary mask (pure numpy/scipy).

Threshold, keep the largest 3D connected component (26-connectivity: the cord is one
object), then fill holes slice by slice on axial slices ``mask[:, :, z]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def binarise(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Voxels whose probability is strictly above ``threshold``.

    Parameters
    ----------
    prob : np.ndarray
        Probabilities (any shape).
    threshold : float
        Cut-off; ``prob > threshold`` is foreground.

    Returns
    -------
    np.ndarray
        bool mask, same shape as ``prob``.
    """
    return np.asarray(prob) > threshold


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest connected component of a 3D mask (26-connectivity).

    Ties are broken by scan order (the component met first by ``scipy.ndimage.label`` wins),
    so the result is deterministic.  An empty mask stays empty.

    Parameters
    ----------
    mask : np.ndarray
        3D mask (non-zero is foreground).

    Returns
    -------
    np.ndarray
        bool mask, same shape.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice ``mask[:, :, z]`` (``scipy.ndimage.binary_fill_holes``).

    Parameters
    ----------
    mask : np.ndarray
        3D mask (non-zero is foreground).

    Returns
    -------
    np.ndarray
        bool mask, same shape.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    filled = np.empty_like(mask)
    for z in range(mask.shape[2]):
        filled[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return filled


def postprocess(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, keep the largest component, fill axial holes.

    Parameters
    ----------
    prob : np.ndarray
        3D probability map.
    threshold : float
        Cut-off passed to :func:`binarise`.

    Returns
    -------
    np.ndarray
        uint8 mask (0/1), same shape as ``prob``.
    """
    mask = keep_largest_component(binarise(prob, threshold))
    return fill_holes_per_slice(mask).astype(np.uint8)
