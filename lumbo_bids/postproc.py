"""Post-processing of a spinal cord probability map into a clean binary mask (pure numpy/scipy).

Threshold, keep the cord's connected components (26-connectivity), find where the cord ends,
then fill holes slice by slice on axial slices ``mask[:, :, z]``.

Which components are "the cord": on the stacks that the network sees (per-slice crops centred
on the centerline) the cord runs along the stack's central axis. On images with thick slices
(3-5 mm resampled to 0.5 mm) the prediction often breaks into several pieces along z, and
keeping only the largest one throws away half of the cord. :func:`keep_cord_components` keeps
every component that comes within a tube around the centerline instead, and drops the others
(false positives beside the cord, e.g. in the CSF or a nerve root); only when no component
reaches the tube (the centerline is off) does it fall back to the largest component.

Where the cord ends (the conus medullaris, at the bottom of the stack): a cord tapers to a point,
so its last millimetres have a small probability and a small cross-section, and the nerve roots
and the filum terminale below it are thin strands. :func:`extend_taper` follows the taper down
with a lower threshold (hysteresis along the centerline) as long as the cross-section keeps
shrinking; :func:`trim_thin_tail` then drops a strand that goes on below the taper (longer than a
conus tip can be thin), keeping the tip itself.
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


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(bool mask, 26-connected labels, count) of a 3D mask."""
    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return mask, labels, count


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
    mask, labels, count = _components(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _chained_along_z(labels: np.ndarray, candidates: np.ndarray, max_gap_vox: int) -> np.ndarray:
    """The largest candidate and every candidate linked to it along z by gaps <= ``max_gap_vox``."""
    objects = ndimage.find_objects(labels)
    extent = {int(k): (objects[k - 1][2].start, objects[k - 1][2].stop - 1) for k in candidates}
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, candidates)
    kept = [int(candidates[int(np.argmax(sizes))])]
    low, high = extent[kept[0]]
    grew = True
    while grew:
        grew = False
        for k in candidates:
            k = int(k)
            if k in kept:
                continue
            a, b = extent[k]
            if a - high <= max_gap_vox and low - b <= max_gap_vox:
                kept.append(k)
                low, high, grew = min(low, a), max(high, b), True
    return np.array(kept)


def keep_cord_components(
    mask: np.ndarray, centerline_xy: np.ndarray | None = None, radius_vox: float = 8.0, max_gap_vox: int = 30
) -> np.ndarray:
    """Keep the connected components (26-connectivity) that reach the centerline tube and
    continue the cord along z.

    Parameters
    ----------
    mask : np.ndarray
        3D mask (non-zero is foreground) on a stack whose axial slices are ``mask[:, :, z]``.
    centerline_xy : np.ndarray, optional
        ``(nz, 2)`` in-plane centerline point of every slice; default: the centre of every
        slice (the stacks cropped around the centerline).
    radius_vox : float
        Radius of the tube, in voxels (8 voxels = 4 mm at 0.5 mm: a cord's radius plus margin).
    max_gap_vox : int
        Largest gap along z, in slices, between pieces of one cord (30 = 15 mm at 0.5 mm:
        several dropped 3-5 mm source slices). Pieces in the tube further away from the rest of
        the cord (e.g. nerve roots of the cauda equina well below the conus) are dropped.

    Returns
    -------
    np.ndarray
        bool mask, same shape: the largest component in the tube and those chained to it along
        z; the largest component if none reaches the tube; empty if ``mask`` is.
    """
    mask, labels, count = _components(mask)
    if count <= 1:
        return mask
    if centerline_xy is None:
        centre = (np.asarray(mask.shape[:2], dtype=np.float64) - 1.0) / 2.0
        centerline_xy = np.tile(centre, (mask.shape[2], 1))
    xy = np.asarray(centerline_xy, dtype=np.float64)
    if xy.shape != (mask.shape[2], 2):
        raise ValueError(f"centerline must have shape ({mask.shape[2]}, 2), got {xy.shape}")
    xs = np.arange(mask.shape[0], dtype=np.float64)[:, None, None]
    ys = np.arange(mask.shape[1], dtype=np.float64)[None, :, None]
    tube = (xs - xy[None, None, :, 0]) ** 2 + (ys - xy[None, None, :, 1]) ** 2 <= radius_vox**2
    touching = np.unique(labels[tube & mask])
    touching = touching[touching > 0]
    if touching.size == 0:
        return keep_largest_component(mask)
    return np.isin(labels, _chained_along_z(labels, touching, max_gap_vox))


#: Settings of the cord's end: the hysteresis threshold as a share of the plan's threshold, the
#: cross-section below which a slice is a strand (mm^2: 1.8 mm across), how long a conus tip may
#: stay that thin (mm; a cone of 40-60 mm^2 tapering over 10-40 mm is below 2.5 mm^2 over 0.5-3 mm)
#: and how much of a strand is kept as the tip (mm).
CORD_END = {"low_share": 0.5, "strand_mm2": 2.5, "max_thin_mm": 4.0, "keep_tip_mm": 1.0, "tip_mm": 4.0, "tip_share": 0.5}


def drop_below_conus(mask: np.ndarray, resolution: float = 0.5) -> np.ndarray:
    """Drop what lies below a gap under a cord that tapered to its end (roots of the cauda equina).

    Along z the mask's slices form pieces separated by empty slices; the piece with the most
    voxels is the cord. When its lowest ``tip_mm`` are thinner than ``tip_share`` of its median
    cross-section, the cord ended there as a conus, and a piece further down (which
    :func:`keep_cord_components` chains across a gap of a few slices) is nerve roots or filum,
    not cord: every slice below the cord's lowest is cleared. A cord that stops at full width
    above a gap (dropped slices of a thick-slice image) keeps what follows. Returns a new bool mask.
    """
    mask = np.asarray(mask) != 0
    area = mask.sum(axis=(0, 1)).astype(np.float64)
    runs, count = ndimage.label(area > 0)
    if count < 2:
        return mask.copy()
    sizes = ndimage.sum_labels(area, runs, np.arange(1, count + 1))
    z = np.flatnonzero(runs == int(np.argmax(sizes)) + 1)
    lo = int(z[0])
    if not (runs[:lo] > 0).any():
        return mask.copy()
    tip = area[lo : lo + max(1, round(CORD_END["tip_mm"] / resolution))]
    if tip.mean() >= CORD_END["tip_share"] * np.median(area[z]):
        return mask.copy()
    out = mask.copy()
    out[:, :, :lo] = False
    return out


def extend_taper(mask: np.ndarray, prob: np.ndarray, low: float) -> np.ndarray:
    """Follow the cord's lower end down, slice by slice, where ``prob > low`` and the cord tapers.

    From the mask's lowest slice downwards, the next slice takes the region of ``prob > low``
    (8-connected in-plane) that touches the slice above it (dilated by one voxel), as long as it
    is not larger than the smallest slice so far (10 % and one voxel of tolerance): a conus
    narrows downwards, so a region that widens (the roots around it, another structure) stops
    the walk. Returns a new bool mask.
    """
    mask = np.asarray(mask) != 0
    out = mask.copy()
    z_cord = np.flatnonzero(mask.any(axis=(0, 1)))
    if z_cord.size == 0:
        return out
    above = mask[:, :, z_cord[0]]
    smallest = int(above.sum())
    for z in range(int(z_cord[0]) - 1, -1, -1):
        labels, _ = ndimage.label(np.asarray(prob[:, :, z]) > low, structure=np.ones((3, 3), dtype=bool))
        touching = np.unique(labels[ndimage.binary_dilation(above) & (labels > 0)])
        region = np.isin(labels, touching[touching > 0])
        if not region.any() or region.sum() > 1.1 * smallest + 1:
            break
        out[:, :, z] = region
        above, smallest = region, min(smallest, int(region.sum()))
    return out


def trim_thin_tail(mask: np.ndarray, resolution: float = 0.5) -> np.ndarray:
    """Drop a thin strand that continues below the cord's end (nerve root, filum terminale).

    The lowest slices of the mask whose cross-section is below ``strand_mm2`` (up to the first
    two consecutive slices at or above it) are its thin end; a conus tip is that thin over a few
    millimetres at most, so an end thinner than that for more than ``max_thin_mm`` is a strand:
    all of it but the ``keep_tip_mm`` next to the cord is removed. Returns a new bool mask.
    """
    mask = np.asarray(mask) != 0
    area = mask.sum(axis=(0, 1)) * resolution**2
    z_cord = np.flatnonzero(area > 0)
    if z_cord.size < 2:
        return mask.copy()
    thick = area >= CORD_END["strand_mm2"]
    starts = np.flatnonzero(thick[:-1] & thick[1:])
    starts = starts[starts >= z_cord[0]]
    if starts.size == 0:
        return mask.copy()
    start = int(starts[0])
    if (start - z_cord[0]) * resolution <= CORD_END["max_thin_mm"]:
        return mask.copy()
    out = mask.copy()
    out[:, :, : max(0, start - round(CORD_END["keep_tip_mm"] / resolution))] = False
    return out


def cord_end(mask: np.ndarray, prob: np.ndarray, threshold: float, resolution: float = 0.5) -> np.ndarray:
    """:func:`drop_below_conus`, :func:`extend_taper` with ``low_share`` of ``threshold``, then
    :func:`trim_thin_tail`."""
    mask = drop_below_conus(mask, resolution)
    return trim_thin_tail(extend_taper(mask, prob, CORD_END["low_share"] * threshold), resolution)


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


def postprocess(
    prob: np.ndarray,
    threshold: float = 0.5,
    centerline_xy: np.ndarray | None = None,
    radius_vox: float = 8.0,
    max_gap_vox: int = 30,
    resolution: float = 0.5,
) -> np.ndarray:
    """Threshold, keep the cord's components (:func:`keep_cord_components`), find the cord's
    lower end (:func:`cord_end`), fill axial holes.

    Parameters
    ----------
    prob : np.ndarray
        3D probability map (a stack cropped around the centerline, unless ``centerline_xy``).
    threshold : float
        Cut-off passed to :func:`binarise`.
    centerline_xy, radius_vox, max_gap_vox
        The centerline tube and the largest gap along z of :func:`keep_cord_components`
        (default: the stack's central axis, 4 mm, 15 mm at 0.5 mm).
    resolution : float
        Isotropic voxel size of the stack (mm), for the cord end's cross-sections.

    Returns
    -------
    np.ndarray
        uint8 mask (0/1), same shape as ``prob``.
    """
    mask = keep_cord_components(binarise(prob, threshold), centerline_xy, radius_vox, max_gap_vox)
    mask = cord_end(mask, np.asarray(prob), threshold, resolution)
    return fill_holes_per_slice(mask).astype(np.uint8)
