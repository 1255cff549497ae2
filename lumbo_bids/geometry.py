"""Voxel grids, exact reorientation, world-space resampling and centreline crops.

The slab-wise resampling engine itself is :mod:`lumbo_bids.resample`.

Pure functions on numpy arrays and 4x4 voxel-to-world affines (no file I/O).
The chain native grid -> SCT "RPI" grid -> isotropic grid -> per-slice crop is
recorded in :class:`PreprocGeometry`, which :func:`to_native` inverts onto the
source image's exact grid. SCT "RPI" is nibabel's ``("L", "A", "S")``; axis 2
is inferior -> superior and an axial slice is ``data[:, :, z]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.affines import apply_affine, rescale_affine, voxel_sizes
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from .resample import SLAB_VOXELS, resample_into

RPI: tuple[str, str, str] = ("L", "A", "S")
DEFAULT_CROP_SIZE: tuple[int, int] = (64, 64)


class _JsonEquality:
    """Equality of the exact JSON forms (arrays inside compare by value)."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Grid(_JsonEquality):
    """A voxel grid in world space: ``shape`` (3 ints) and 4x4 voxel-to-world ``affine`` (read-only copy)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"a grid needs three positive dimensions, got {self.shape!r}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError("a grid needs a finite 4x4 affine")
        affine.flags.writeable = False
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    @property
    def zooms(self) -> np.ndarray:
        """Voxel sizes (mm) along the three array axes."""
        return voxel_sizes(self.affine)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (lists); exact through ``json`` round trips."""
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["shape"]), np.asarray(d["affine"], dtype=np.float64))


# ------------------------------------------------------------------ reorientation
def _orientation_of(affine: np.ndarray) -> np.ndarray:
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.any(np.isnan(ornt)):
        raise ValueError("the affine is singular: its orientation is undefined")
    return ornt


def _apply_ornt(data: np.ndarray, affine: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple:
    transform = ornt_transform(start, end)
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(transform, data.shape[:3])
    return apply_orientation(data, transform), new_affine


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: Sequence[str] = RPI) -> tuple[np.ndarray, np.ndarray]:
    """Permute / flip array axes to follow nibabel ``axcodes`` (no interpolation).

    Returns the same values and dtype (a *view* of ``data`` when possible: copy
    before writing; trailing axes beyond 3 are kept) and the affine that keeps
    every voxel at its world position.
    """
    data = np.asarray(data)
    if data.ndim < 3:
        raise ValueError(f"reorient needs a 3D array, got {data.ndim}D")
    return _apply_ornt(data, affine, _orientation_of(affine), axcodes2ornt(tuple(axcodes)))


def unreorient(data: np.ndarray, native: Grid) -> np.ndarray:
    """Exact inverse of ``reorient(x, native.affine, RPI)`` for an array on the RPI grid.

    The permutation comes from the native affine itself (never re-derived from
    the RPI affine), so it is the exact inverse even for oblique affines.
    """
    data = np.asarray(data)
    out, _ = _apply_ornt(data, np.eye(4), axcodes2ornt(RPI), _orientation_of(native.affine))
    if out.shape[:3] != native.shape:
        raise ValueError(f"array of shape {data.shape[:3]} is not on the RPI grid of {native.shape}")
    return out


def load_volume(img: Any) -> np.ndarray:
    """Float32 3D data of an in-memory nibabel image (the image is not modified).

    ``scl_slope`` / ``scl_inter`` are applied, NaN and +-inf become 0 and a 4D
    image with one volume is squeezed; ValueError for anything else not 3D, and for float64
    values that float32 cannot hold (they would become infinite, then 0).
    """
    shape = tuple(img.shape)
    if len(shape) < 3:
        raise ValueError(f"{len(shape)}D image: a 3D volume is expected")
    volumes = int(np.prod(shape[3:], dtype=np.int64))
    if volumes != 1:
        raise ValueError(f"4D image with {volumes} volumes: a single 3D volume is expected")
    stored = np.dtype(img.get_data_dtype())
    if stored.kind == "f" and stored.itemsize > 4:  # float64 on disk: may not fit in float32
        raw = np.asarray(img.dataobj)
        peak = float(np.max(np.abs(raw[np.isfinite(raw)]), initial=0.0))
        limit = float(np.finfo(np.float32).max)
        if peak > limit:
            raise ValueError(f"values up to {peak:.3g} exceed the float32 range ({limit:.3g}): rescale the image")
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    finite = np.isfinite(data)
    if not finite.all():
        if isinstance(img.dataobj, np.ndarray) and np.shares_memory(data, img.dataobj):
            data = data.copy()
        data[~finite] = 0.0
    return data


# --------------------------------------------------------------------- resampling
def resampled_grid(grid: Grid, resolution: float | Sequence[float]) -> Grid:
    """The same orientation and field of view with voxel size ``resolution``.

    Shape ``max(1, round(shape * zoom / resolution))``; the affine comes from
    :func:`nibabel.affines.rescale_affine`, which keeps the world position of
    voxel ``(shape - 1) // 2``. For integer zoom ratios every native voxel
    centre is then a voxel centre of the new grid, which makes native ->
    resampled -> native lossless with linear interpolation.
    """
    res = np.broadcast_to(np.asarray(resolution, dtype=np.float64), (3,))
    if not np.all(res > 0):
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    shape = np.asarray(grid.shape)
    new_shape = np.maximum(1, np.rint(shape * grid.zooms / res)).astype(int)
    return Grid(tuple(int(n) for n in new_shape), rescale_affine(grid.affine, shape, res, new_shape))


def resample_to_grid(
    data: np.ndarray, src_affine: np.ndarray, target: Grid, order: int = 1, cval: float = 0.0,
    *, max_slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:  # fmt: skip
    """Resample ``data`` (3D, on ``src_affine``) onto ``target`` in world space: float32.

    Parameters
    ----------
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic...).
    cval : float
        Value where the world position is outside the source field of view
        (source voxel centres +- half a voxel).
    max_slab_voxels : int
        Output voxels per call of :func:`scipy.ndimage.affine_transform`.

    Notes
    -----
    A diagonal voxel-to-voxel mapping (always the case after :func:`reorient`
    and :func:`resampled_grid`) is passed to scipy as its 1-D diagonal, which
    computes coordinates on the fly; oblique mappings use the 3x3 matrix.
    The output is filled slab by slab, each reading only the source slices it
    needs (never copied for ``order <= 1``): peak memory is about the output
    plus one slab, plus a float32 copy of the input for ``order > 1``.
    """
    out = np.empty(target.shape, dtype=np.float32)
    return resample_into(out, data, _target_to_source(src_affine, target), order, cval, None, max_slab_voxels)


def resample_mask_to_grid(mask: np.ndarray, src_affine: np.ndarray, target: Grid) -> np.ndarray:
    """Resample a binary mask: linear interpolation of ``mask > 0.5``, then ``>= 0.5`` (uint8).

    The boundary lands half-way between inside and outside source voxels;
    nearest neighbour makes staircases that shift thin or tilted structures by
    up to half a source voxel (``tests/test_geometry.py::test_mask_rule_beats_nearest...``).
    No float volume is ever held.
    """
    binary = (np.asarray(mask) > 0.5).view(np.uint8)
    out = np.empty(target.shape, dtype=np.uint8)
    return resample_into(out, binary, _target_to_source(src_affine, target), order=1, cval=0.0, threshold=0.5)


def _target_to_source(src_affine: np.ndarray, target: Grid) -> np.ndarray:
    """4x4 map from ``target``'s voxels to the source's voxels."""
    return np.linalg.solve(np.asarray(src_affine, dtype=np.float64), target.affine)


# --------------------------------------------------------------------------- crops
@dataclass(frozen=True, eq=False)
class CropBox(_JsonEquality):
    """A fixed-size in-plane box centred on the cord, one centre per axial slice.

    ``centers`` is ``(nz, 2)`` int: the box centre ``(cx, cy)`` on each slice of
    ``grid`` (the full resampled RPI grid). On slice z the box covers
    ``x0 = cx - sx // 2`` to ``x0 + sx`` (centre voxel at crop index ``sx // 2``),
    likewise in y, for ``size = (sx, sy)``.
    """

    centers: np.ndarray
    size: tuple[int, int]
    grid: Grid

    def __post_init__(self) -> None:
        centers = np.array(self.centers, dtype=np.int64)
        size = tuple(int(s) for s in self.size)
        if centers.shape != (self.grid.shape[2], 2):
            raise ValueError(f"centers must have shape ({self.grid.shape[2]}, 2), got {centers.shape}")
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be two positive ints, got {self.size!r}")
        centers.flags.writeable = False
        object.__setattr__(self, "centers", centers)
        object.__setattr__(self, "size", size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(sx, sy, nz)`` of the cropped stack."""
        return (*self.size, self.grid.shape[2])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (lists)."""
        return {"centers": self.centers.tolist(), "size": list(self.size), "grid": self.grid.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropBox:
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(d["centers"], dtype=np.int64), tuple(d["size"]), Grid.from_dict(d["grid"]))


def crop_box_from_centerline(centerline_xy: np.ndarray, grid: Grid, size: tuple[int, int] = DEFAULT_CROP_SIZE) -> CropBox:
    """Box on ``grid`` centred on the rounded ``(nz, 2)`` centreline, centres clipped into the image."""
    xy = np.asarray(centerline_xy, dtype=np.float64)
    if xy.shape != (grid.shape[2], 2) or not np.all(np.isfinite(xy)):
        raise ValueError(f"centerline must be a finite ({grid.shape[2]}, 2) array, got {xy.shape}")
    centers = np.clip(np.rint(xy).astype(np.int64), 0, np.array(grid.shape[:2]) - 1)
    return CropBox(centers, tuple(size), grid)


def _axis_window(center: int, size: int, n: int) -> tuple[slice, slice]:
    """(image slice, crop slice) of a box of ``size`` centred on ``center`` along an axis of ``n``."""
    start = center - size // 2
    lo = max(start, 0)
    hi = max(min(start + size, n), lo)
    return slice(lo, hi), slice(lo - start, hi - start)


def _windows(box: CropBox) -> Iterator[tuple[int, tuple[slice, slice], tuple[slice, slice]]]:
    """Per slice z: (image index, crop index) of the part of the box inside the image."""
    for z, (cx, cy) in enumerate(box.centers):
        xs, xd = _axis_window(int(cx), box.size[0], box.grid.shape[0])
        ys, yd = _axis_window(int(cy), box.size[1], box.grid.shape[1])
        yield z, (xs, ys), (xd, yd)


def crop_around_centerline(data: np.ndarray, box: CropBox, cval: float = 0.0) -> np.ndarray:
    """Stack ``(sx, sy, nz)`` (dtype of ``data``) of the per-slice boxes; ``cval`` outside the image."""
    data = np.asarray(data)
    if data.shape != box.grid.shape:
        raise ValueError(f"data of shape {data.shape} is not on the crop grid {box.grid.shape}")
    out = np.full(box.shape, cval, dtype=data.dtype)
    for z, src, dst in _windows(box):
        out[dst + (z,)] = data[src + (z,)]
    return out


def uncrop(cropped: np.ndarray, box: CropBox, fill: float = 0.0) -> np.ndarray:
    """Put a stack back on ``box.grid`` (``fill`` outside every box; box parts outside the image dropped).

    Exact inverse of :func:`crop_around_centerline` inside the image.
    """
    cropped = np.asarray(cropped)
    if cropped.shape != box.shape:
        raise ValueError(f"cropped array of shape {cropped.shape} does not match the box {box.shape}")
    out = np.full(box.grid.shape, fill, dtype=cropped.dtype)
    for z, src, dst in _windows(box):
        out[src + (z,)] = cropped[dst + (z,)]
    return out


def bounding_crop(box: CropBox) -> tuple[tuple[slice, slice, slice], Grid]:
    """Axis-aligned bounding box of all per-slice boxes, clipped to the image.

    Returns its index into arrays on ``box.grid`` and its grid:
    ``data[slices]`` with ``grid.affine`` is a valid world-space image.
    """
    starts = box.centers - np.array(box.size) // 2
    lo = np.maximum(starts.min(axis=0), 0)
    hi = np.minimum((starts + np.array(box.size)).max(axis=0), box.grid.shape[:2])
    nz = box.grid.shape[2]
    slices = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(0, nz))
    affine = np.array(box.grid.affine)
    affine[:3, 3] = apply_affine(box.grid.affine, (lo[0], lo[1], 0))
    return slices, Grid((int(hi[0] - lo[0]), int(hi[1] - lo[1]), nz), affine)


# --------------------------------------------------------------- native <-> model
@dataclass(frozen=True, eq=False)
class PreprocGeometry(_JsonEquality):
    """Everything needed to map an array from the model's grid back to native space.

    ``native``: the source grid; ``rpi``: the same voxels after :func:`reorient`;
    ``resampled``: the isotropic grid (same field of view); ``crop``: the
    per-slice crop taken from ``resampled`` (None: the full resampled grid).
    """

    native: Grid
    rpi: Grid
    resampled: Grid
    crop: CropBox | None = None

    def __post_init__(self) -> None:
        # ValueError unless rpi is a permutation of native (broadcast array: no memory)
        unreorient(np.broadcast_to(np.uint8(0), self.rpi.shape), self.native)
        if self.crop is not None and self.crop.grid != self.resampled:
            raise ValueError("the crop box was not taken from the resampled grid")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; exact through ``json`` round trips."""
        grids = {name: getattr(self, name).to_dict() for name in ("native", "rpi", "resampled")}
        return {**grids, "crop": None if self.crop is None else self.crop.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocGeometry:
        """Inverse of :meth:`to_dict`."""
        crop = None if d.get("crop") is None else CropBox.from_dict(d["crop"])
        return cls(Grid.from_dict(d["native"]), Grid.from_dict(d["rpi"]), Grid.from_dict(d["resampled"]), crop)


def to_native(array: np.ndarray, geom: PreprocGeometry, order: int = 1, threshold: float | None = None) -> np.ndarray:
    """Map ``array`` (on the cropped grid ``crop.size + (nz,)``, or on ``geom.resampled``
    when ``geom.crop`` is None) back onto ``geom.native``.

    Un-crop (0 outside every per-slice box; box parts outside the image are
    dropped) -> resample (spline ``order``) onto ``geom.rpi`` -> exact inverse
    reorientation. With ``threshold``: uint8 ``resampled >= threshold`` (masks),
    else float32. The result is C-contiguous, to be written with ``geom.native.affine``.
    """
    out = np.empty(geom.rpi.shape, dtype=np.float32 if threshold is None else np.uint8)
    full = _on_resampled_grid(array, geom)  # freed before the final copy
    on_rpi = resample_into(out, full, _target_to_source(geom.resampled.affine, geom.rpi), order, 0.0, threshold)
    del full
    return np.ascontiguousarray(unreorient(on_rpi, geom.native))


def _on_resampled_grid(array: np.ndarray, geom: PreprocGeometry) -> np.ndarray:
    """Un-cropped ``array`` (masks stay 1 byte per voxel, anything else float32)."""
    array = np.asarray(array)
    array = array.view(np.uint8) if array.dtype == bool else array
    array = array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)
    if geom.crop is not None:
        return uncrop(array, geom.crop, fill=0.0)
    if array.shape != geom.resampled.shape:
        raise ValueError(f"array of shape {array.shape} is not on the resampled grid {geom.resampled.shape}")
    return array
