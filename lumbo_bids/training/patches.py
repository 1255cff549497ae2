"""Patch sampling and extraction for training (pure numpy, works on memory maps).

Conventions
-----------
A patch of size ``s`` centred on voxel ``c`` covers the indices ``[c - s // 2, c - s // 2 + s)``
along each axis; the parts outside the volume are filled with ``cval``. Only the region of the
volume that the patch overlaps is read, so ``volume`` may be an ``np.memmap`` (``np.load(...,
mmap_mode="r")``) and nothing else of it is loaded.

Volumes are ``(X, Y, Z)`` arrays in RPI orientation, ``Z`` the axial (slice) axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Number of axial slices read at a time when scanning a (memory-mapped) mask.
SCAN_CHUNK = 32


def patch_bounds(centre: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and stop (exclusive) indices of a patch.

    Parameters
    ----------
    centre : sequence of int
        Patch centre, one index per axis.
    size : sequence of int
        Patch size per axis.

    Returns
    -------
    start, stop : np.ndarray
        ``start = centre - size // 2`` and ``stop = start + size`` (may lie outside the volume).
    """
    centre_arr = np.asarray(centre, dtype=np.int64)
    size_arr = np.asarray(size, dtype=np.int64)
    if centre_arr.shape != size_arr.shape:
        raise ValueError(f"centre {tuple(centre_arr)} and size {tuple(size_arr)} differ in length")
    if np.any(size_arr < 1):
        raise ValueError(f"patch size must be positive, got {tuple(size_arr)}")
    start = centre_arr - size_arr // 2
    return start, start + size_arr


def extract_patch(volume: np.ndarray, centre: Sequence[int], size: Sequence[int], cval: float = 0) -> np.ndarray:
    """Copy the patch of ``volume`` of ``size`` around ``centre``, padded with ``cval``.

    Parameters
    ----------
    volume : np.ndarray
        N-dimensional array (an ``np.memmap`` is only read where the patch overlaps it).
    centre : sequence of int
        Patch centre (``len == volume.ndim``); may lie outside the volume.
    size : sequence of int
        Patch size per axis.
    cval : float
        Value of the voxels of the patch that fall outside the volume.

    Returns
    -------
    np.ndarray
        A new in-memory array of shape ``size`` and the dtype of ``volume``.
    """
    if len(size) != volume.ndim:
        raise ValueError(f"patch size {tuple(size)} does not match a {volume.ndim}D volume")
    start, stop = patch_bounds(centre, size)
    shape = np.asarray(volume.shape, dtype=np.int64)
    src_lo = np.clip(start, 0, shape)
    src_hi = np.clip(stop, 0, shape)
    out = np.full(tuple(int(s) for s in size), cval, dtype=volume.dtype)
    if np.any(src_hi <= src_lo):
        return out  # the patch lies entirely outside the volume
    src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
    dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(src_lo, src_hi, start))
    out[dst] = volume[src]
    return out


def extract_patch_2d(image: np.ndarray, centre: Sequence[int], size: Sequence[int] = (96, 96), cval: float = 0) -> np.ndarray:
    """2D version of :func:`extract_patch` (one axial slice ``(X, Y)``) for the localiser.

    Parameters
    ----------
    image : np.ndarray
        2D array.
    centre : sequence of int
        ``(x, y)`` centre of the patch.
    size : sequence of int
        ``(sx, sy)`` patch size.
    cval : float
        Fill value outside the image.

    Returns
    -------
    np.ndarray
        Array of shape ``size``.
    """
    if image.ndim != 2 or len(centre) != 2 or len(size) != 2:
        raise ValueError(f"extract_patch_2d needs a 2D image, centre and size (image is {image.ndim}D)")
    return extract_patch(image, centre, size, cval)


def cord_slices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices of a mask that contain cord, and their cord voxel counts.

    Parameters
    ----------
    mask : np.ndarray
        ``(X, Y, Z)`` mask (non-zero is cord); read ``SCAN_CHUNK`` slices at a time.

    Returns
    -------
    z : np.ndarray
        int64 indices of the slices with at least one cord voxel.
    counts : np.ndarray
        int64 number of cord voxels of each of those slices.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
    counts = np.zeros(mask.shape[2], dtype=np.int64)
    for z0 in range(0, mask.shape[2], SCAN_CHUNK):
        chunk = np.asarray(mask[:, :, z0 : z0 + SCAN_CHUNK])
        counts[z0 : z0 + chunk.shape[2]] = np.count_nonzero(chunk, axis=(0, 1))
    z = np.flatnonzero(counts)
    return z, counts[z]


def mask_centerline(mask: np.ndarray) -> np.ndarray:
    """Cord centre (centre of mass) of every axial slice of a mask.

    Parameters
    ----------
    mask : np.ndarray
        ``(X, Y, Z)`` mask; read ``SCAN_CHUNK`` slices at a time.

    Returns
    -------
    np.ndarray
        ``(Z, 2)`` float64 ``(x, y)`` voxel coordinates; NaN for slices without cord.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
    xs = np.arange(mask.shape[0], dtype=np.float64)
    ys = np.arange(mask.shape[1], dtype=np.float64)
    out = np.full((mask.shape[2], 2), np.nan)
    for z0 in range(0, mask.shape[2], SCAN_CHUNK):
        chunk = np.asarray(mask[:, :, z0 : z0 + SCAN_CHUNK]) != 0
        n = chunk.sum(axis=(0, 1)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = np.einsum("i,ijk->k", xs, chunk) / n
            cy = np.einsum("j,ijk->k", ys, chunk) / n
        out[z0 : z0 + chunk.shape[2]] = np.stack([cx, cy], axis=1)
    return out


def _uniform_centres(shape: Sequence[int], size: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Centres drawn uniformly so that the patch stays inside the volume where it fits."""
    cols = []
    for dim, s in zip(shape, size):
        lo, hi = s // 2, dim - (s - s // 2)  # inclusive range keeping [c - s//2, c - s//2 + s) inside
        if hi < lo:  # the volume is smaller than the patch along this axis: anywhere inside it
            lo, hi = 0, dim - 1
        cols.append(rng.integers(lo, hi + 1, size=n))
    return np.stack(cols, axis=1).astype(np.int64) if n else np.zeros((0, len(shape)), np.int64)


def cord_ends(z_cord: np.ndarray, depth: int, margin: int = 2) -> list[int]:
    """Slices where the cord ends inside the volume (its lowest and highest cord slices, each
    kept only when it lies more than ``margin`` slices from the volume's first and last slice:
    a cord that leaves the field of view has no end there)."""
    if not z_cord.size:
        return []
    lo, hi = int(z_cord.min()), int(z_cord.max())
    return [z for z, inside in ((lo, lo > margin), (hi, hi < depth - 1 - margin)) if inside]


def _check_sampling(mask, n: int, patch_size, cord_fraction: float, end_fraction: float) -> None:
    """A ValueError naming the argument of :func:`sample_patch_centres` that is out of range."""
    if not 0.0 <= cord_fraction <= 1.0:
        raise ValueError(f"cord_fraction must be in [0, 1], got {cord_fraction}")
    if len(patch_size) != mask.ndim or mask.ndim != 3:
        raise ValueError(f"need a 3D mask and a 3D patch size, got {mask.shape} and {tuple(patch_size)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= end_fraction <= 1.0:
        raise ValueError(f"end_fraction must be in [0, 1], got {end_fraction}")


def sample_patch_centres(
    mask: np.ndarray,
    n: int,
    patch_size: Sequence[int],
    cord_fraction: float,
    rng: np.random.Generator,
    cord_index: tuple[np.ndarray, np.ndarray] | None = None,
    end_fraction: float = 0.0,
) -> np.ndarray:
    """Patch centres: ``round(n * cord_fraction)`` on the cord, the rest uniform in the volume.

    A cord centre is drawn along the cord: a slice containing cord is chosen uniformly (so
    every level of the cord is equally likely, whatever its cross-section), then a cord voxel
    of that slice. A uniform centre is drawn so that the patch lies inside the volume along
    every axis where the volume is at least as large as the patch (anywhere inside the volume
    along the others). With no cord in ``mask`` every centre is uniform.

    Parameters
    ----------
    mask : np.ndarray
        ``(X, Y, Z)`` binary cord mask (may be an ``np.memmap``: only the chosen slices and,
        unless ``cord_index`` is given, a chunked scan are read).
    n, patch_size : int, sequence of int
        Number of centres; ``(sx, sy, sz)``.
    cord_fraction : float
        Fraction in ``[0, 1]`` of centres placed on cord voxels.
    rng : np.random.Generator
        Source of randomness (the result is a function of its state).
    cord_index : tuple of np.ndarray, optional
        The result of :func:`cord_slices` for ``mask``, to avoid rescanning it.
    end_fraction : float
        Fraction in ``[0, 1]`` of the cord centres placed around an end of the cord that lies
        inside the volume (a conus tip; not a cord cut by the field of view): a slice within
        half a patch above or below the end, at the cord's centre on its end slice. The
        hardest voxels of a lumbar image (the last millimetres of the conus, the roots just
        below it) are then seen in every epoch, not only when a centre happens to fall there.
        Without such an end they stay ordinary cord centres. Use it for labels whose ends are
        true (phantoms), not for masks that an annotator stopped short.

    Returns ``(n, 3)`` int64 centres, the cord ones first (end centres among them, first).
    """
    _check_sampling(mask, n, patch_size, cord_fraction, end_fraction)
    z_cord, _ = cord_index if cord_index is not None else cord_slices(mask)
    n_cord = int(round(n * cord_fraction)) if z_cord.size else 0
    centres = np.empty((n, 3), dtype=np.int64)
    ends = cord_ends(z_cord, mask.shape[2]) if end_fraction > 0 else []
    n_end = int(round(n_cord * end_fraction)) if ends else 0
    half = int(patch_size[2]) // 2
    for i in range(n_end):
        z_end = ends[int(rng.integers(len(ends)))]
        xy = np.argwhere(np.asarray(mask[:, :, z_end]) != 0).mean(axis=0)
        centres[i, :2] = np.round(xy)
        centres[i, 2] = np.clip(z_end + rng.integers(-half, half + 1), 0, mask.shape[2] - 1)
    if n_cord > n_end:
        for i, z in enumerate(rng.choice(z_cord, size=n_cord - n_end), start=n_end):
            xy = np.argwhere(np.asarray(mask[:, :, int(z)]) != 0)
            centres[i, :2] = xy[rng.integers(len(xy))]
            centres[i, 2] = z
    centres[n_cord:] = _uniform_centres(mask.shape, patch_size, n - n_cord, rng)
    return centres


def sample_window_centre_2d(
    shape: Sequence[int],
    size: Sequence[int],
    cord_xy: Sequence[float] | None,
    contain_probability: float,
    rng: np.random.Generator,
    margin: int = 4,
) -> np.ndarray:
    """Centre of a 2D localiser window that contains the cord with a given probability.

    With probability ``contain_probability`` (when the slice has cord) the window is placed so
    that the cord point lies inside it, at least ``margin`` voxels from its edges, at a uniform
    random position; otherwise the centre is uniform inside the slice (the window may then
    contain the cord or not).

    Parameters
    ----------
    shape : sequence of int
        ``(X, Y)`` of the slice.
    size : sequence of int
        ``(sx, sy)`` of the window.
    cord_xy : sequence of float or None
        Cord centre of the slice, or None (or NaN) when the slice has no cord.
    contain_probability : float
        In ``[0, 1]``.
    rng : np.random.Generator
        Source of randomness.
    margin : int
        Minimum distance of the cord point from the window's edges.

    Returns
    -------
    np.ndarray
        ``(2,)`` int64 centre.
    """
    if not 0.0 <= contain_probability <= 1.0:
        raise ValueError(f"contain_probability must be in [0, 1], got {contain_probability}")
    has_cord = cord_xy is not None and bool(np.all(np.isfinite(cord_xy)))
    if has_cord and rng.random() < contain_probability:
        centre = np.empty(2, dtype=np.int64)
        for k in range(2):
            p = int(round(float(cord_xy[k])))  # type: ignore[index]
            half = size[k] // 2
            # start = c - half must satisfy start + margin <= p <= start + size - 1 - margin
            lo, hi = p - (size[k] - 1 - margin) + half, p - margin + half
            if hi < lo:  # window smaller than twice the margin: centre on the point
                lo = hi = p
            centre[k] = rng.integers(lo, hi + 1)
        return centre
    return np.array([rng.integers(0, shape[0]), rng.integers(0, shape[1])], dtype=np.int64)


def gaussian_heatmap_2d(size: Sequence[int], point: Sequence[float] | None, sigma: float) -> np.ndarray:
    """Target heat-map of a localiser window: a Gaussian of peak 1 around the cord point.

    Same formula as :func:`lumbo_bids.model.localise.heatmap_target`
    (``exp(-d**2 / (2 sigma**2))``); all zeros when the slice has no cord.

    Parameters
    ----------
    size : sequence of int
        ``(sx, sy)`` of the window.
    point : sequence of float or None
        Cord point in window coordinates (may lie outside the window), None or NaN if none.
    sigma : float
        Standard deviation in voxels (> 0).

    Returns
    -------
    np.ndarray
        float32 array of shape ``size``.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if point is None or not np.all(np.isfinite(point)):
        return np.zeros(tuple(size), dtype=np.float32)
    xs = np.arange(size[0], dtype=np.float32)[:, None] - np.float32(point[0])
    ys = np.arange(size[1], dtype=np.float32)[None, :] - np.float32(point[1])
    return np.exp(-(xs**2 + ys**2) / np.float32(2 * sigma**2)).astype(np.float32)
