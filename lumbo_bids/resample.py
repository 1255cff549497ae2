"""Slab-wise affine resampling of 3D arrays (the engine of :func:`lumbo_bids.geometry.resample_to_grid`).

Pure numpy/scipy on voxel-to-voxel maps: the output is filled a slab of axial slices at a time,
each slab reading only the source slices it needs, diagonal maps passed to scipy as their 1-D
diagonal, integer shifts copied exactly; points outside the source's field of view (voxel
centres +- half a voxel) get ``cval``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: output voxels resampled per call of scipy (whole axial slices): bounds temporary memory
SLAB_VOXELS = 2**22
#: how far (voxels) beyond the half-voxel border a source point still counts as inside
_FOV_TOL = 1e-3
#: edge padding before spline filtering in 'nearest' mode (as scipy itself does)
_SPLINE_PAD = 12


def _is_diagonal(matrix: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True when off-diagonal terms move no coordinate by more than 1e-6 voxel."""
    off = matrix - np.diag(np.diag(matrix))
    return bool(np.abs(off).max() * max(shape) < 1e-6 and np.all(np.diag(matrix) != 0))


def _inside(coords: np.ndarray, n: int) -> np.ndarray:
    return (coords >= -0.5 - _FOV_TOL) & (coords <= n - 0.5 + _FOV_TOL)


def _blank_outside_fov(out: np.ndarray, matrix: np.ndarray, offset: np.ndarray, src_shape: tuple, cval: float) -> None:
    """``cval`` where the source point is outside the source field of view.

    A voxel covers +-0.5 voxel around its centre: points between the last
    centre and the border keep the edge value (scipy 'nearest').
    """
    idx = [np.arange(n, dtype=np.float64) for n in out.shape]
    if _is_diagonal(matrix, out.shape):
        for axis in range(3):
            inside = _inside(matrix[axis, axis] * idx[axis] + offset[axis], src_shape[axis])
            out[(slice(None),) * axis + (~inside,)] = cval
        return
    for k in range(out.shape[2]):  # one slice of coordinates at a time
        inside = np.ones(out.shape[:2], dtype=bool)
        for axis in range(3):
            coords = np.add.outer(matrix[axis, 0] * idx[0], matrix[axis, 1] * idx[1])
            inside &= _inside(coords + matrix[axis, 2] * k + offset[axis], src_shape[axis])
        out[:, :, k][~inside] = cval


def _spline_source(data: np.ndarray, order: int) -> tuple[np.ndarray, int]:
    """What to interpolate and its padding: the data itself, or float32 spline coefficients."""
    if order <= 1:
        return data, 0
    padded = np.pad(np.asarray(data, dtype=np.float32), _SPLINE_PAD, mode="edge")
    return ndimage.spline_filter(padded, order, output=np.float32, mode="nearest"), _SPLINE_PAD


def _is_integer_shift(matrix: np.ndarray, offset: np.ndarray, shape: tuple) -> bool:
    unit = _is_diagonal(matrix, shape) and np.allclose(np.diag(matrix), 1.0, rtol=0, atol=1e-9)
    return bool(unit and np.allclose(offset, np.rint(offset), rtol=0, atol=1e-6))


def _resample_slab(source: np.ndarray, matrix: np.ndarray, offset: np.ndarray, shape: tuple, order: int) -> np.ndarray:
    """One slab of output slices, reading only the source slices (axis 2) it needs."""
    if order <= 1 and _is_integer_shift(matrix, offset, shape):  # exact copy, edge-clamped like 'nearest'
        idx = [np.clip(np.arange(n) + int(np.rint(o)), 0, m - 1) for n, o, m in zip(shape, offset, source.shape)]
        return source[np.ix_(*idx)].astype(np.float32)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1)
    z = matrix[2] @ corners + offset[2]
    margin = order // 2 + 2
    z_lo = int(np.clip(np.floor(z.min()) - margin, 0, source.shape[2] - 1))
    z_hi = int(np.clip(np.ceil(z.max()) + margin + 1, z_lo + 1, source.shape[2]))
    diagonal = _is_diagonal(matrix, shape)
    return ndimage.affine_transform(
        source[:, :, z_lo:z_hi],
        np.diag(matrix).copy() if diagonal else matrix,  # 1-D: coordinates computed on the fly
        offset - np.array([0.0, 0.0, z_lo]),
        output_shape=shape,
        output=np.float32,
        order=order,
        mode="nearest",
        prefilter=False,
    )


def resample_into(
    out: np.ndarray, data: np.ndarray, vox: np.ndarray, order: int, cval: float,
    threshold: float | None = None, max_slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:  # fmt: skip
    """Fill ``out`` (the target grid's array) from ``data``, slab by slab of axial slices;
    ``vox`` maps target voxels to source voxels (4x4). With ``threshold``, store
    ``slab >= threshold`` (no float volume is held). ``cval`` outside the source field of view."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"resampling needs a 3D array, got shape {data.shape}")
    matrix, offset = vox[:3, :3], vox[:3, 3]
    source, pad = _spline_source(data, order)
    nx, ny, nz = out.shape
    step = max(1, max_slab_voxels // (nx * ny))
    for z0, z1 in ((z, min(nz, z + step)) for z in range(0, nz, step)):
        slab_offset = offset + matrix[:, 2] * z0
        slab = _resample_slab(source, matrix, slab_offset + pad, (nx, ny, z1 - z0), order)
        _blank_outside_fov(slab, matrix, slab_offset, data.shape, cval)
        out[:, :, z0:z1] = slab if threshold is None else slab >= threshold
    return out
