"""How far a centerline is from a reference one: pure numpy, voxel coordinates in, millimetres out.

Used to score a cord localiser against manual masks (the group level's localiser fine-tuning):
the localiser's centerline and the manual mask's centerline are compared slice by slice, on
the slices where the mask has cord, by their in-plane distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def centerline_error(
    predicted_xy: np.ndarray, reference_xy: np.ndarray, zooms_xy: Sequence[float] = (1.0, 1.0), slices: np.ndarray | None = None
) -> tuple[float, float]:
    """``(mean, max)`` in-plane distance (mm) between two centerlines of one volume.

    Parameters
    ----------
    predicted_xy, reference_xy : numpy.ndarray
        ``(nz, 2)`` in-plane voxel coordinates, one point per axial slice (as
        :func:`lumbo_bids.centerline.centerline_from_mask` and ``centerline_from_heatmap`` give).
    zooms_xy : sequence of float
        In-plane voxel size (mm).
    slices : numpy.ndarray, optional
        Boolean ``(nz,)`` or indices of the slices to score (e.g. where the manual mask has cord);
        default every slice.
    """
    pred, ref = np.asarray(predicted_xy, dtype=np.float64), np.asarray(reference_xy, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"centerlines must both be (nz, 2), got {pred.shape} and {ref.shape}")
    index = np.arange(len(ref)) if slices is None else np.asarray(slices)
    if index.dtype == bool:
        index = np.flatnonzero(index)
    if index.size == 0:
        raise ValueError("no slice to score")
    distance = np.linalg.norm((pred[index] - ref[index]) * np.asarray(zooms_xy, dtype=np.float64)[:2], axis=1)
    return float(distance.mean()), float(distance.max())
