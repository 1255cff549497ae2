"""An image "re-acquired" as a scanner would: thick slices along any axis (pure numpy/nibabel).

A real 2D acquisition averages the tissue over each slice (its slice profile) and samples one
value per slice. :func:`reacquire` does this in world space to an image we have: the image is
resampled (linear) onto a fine grid in SCT "RPI" orientation whose voxels along the slice axis
are ``thickness / SUBSAMPLES``, then every ``SUBSAMPLES`` consecutive fine voxels are averaged
(a box slice profile, contiguous slices without gap) into one thick voxel, whose centre is the
mean of theirs. The result is a new image on its own grid with a correct affine: a sagittal
3 mm version of an isotropic lumbar T2w, an axial 5 mm version of a cervical T2*w. Masks are
re-acquired the same way, then thresholded at 0.5 (the share of the thick voxel that is cord).

:func:`field_of_view` keeps a head-foot stretch of an image, as a scanner with a smaller field of
view would have imaged it (a lumbar image around the conus, 78 mm long). Used by
``scripts/reacquire.py`` (a whole BIDS dataset with its manual masks).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from .geometry import RPI, Grid, reorient, resample_to_grid

#: slice orientation -> the RPI axis across the slices
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}
SUBSAMPLES = 6


def thick_grid(native: Grid, plane: str, thickness: float, inplane: float) -> tuple[Grid, Grid]:
    """(fine grid, thick grid), both RPI and covering ``native``'s field of view.

    ``native`` must already be RPI. The fine grid has ``thickness / SUBSAMPLES`` mm voxels across
    the slices and ``inplane`` mm in-plane; the thick grid has ``thickness`` mm across the slices.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    if not (thickness > 0 and inplane > 0):
        raise ValueError(f"thickness and inplane must be positive, got {thickness} and {inplane}")
    axis = PLANES[plane]
    zooms = np.asarray(native.zooms, dtype=np.float64)
    extent = np.asarray(native.shape) * zooms  # mm covered by the native voxels
    fine_res = np.full(3, float(inplane))
    fine_res[axis] = thickness / SUBSAMPLES
    n_thick = max(1, int(np.floor(extent[axis] / thickness + 1e-6)))
    fine_shape = np.maximum(1, np.floor(extent / fine_res + 1e-6)).astype(int)
    fine_shape[axis] = n_thick * SUBSAMPLES
    # the fine grid starts half a fine voxel inside the native field of view (its first corner)
    direction = native.affine[:3, :3] / zooms  # unit vectors of the RPI axes (no shear after reorient)
    corner = native.affine[:3, 3] - direction @ (zooms / 2.0)
    fine_affine = np.eye(4)
    fine_affine[:3, :3] = direction * fine_res
    fine_affine[:3, 3] = corner + direction @ (fine_res / 2.0)
    thick_res = fine_res.copy()
    thick_res[axis] = thickness
    thick_shape = fine_shape.copy()
    thick_shape[axis] = n_thick
    thick_affine = np.eye(4)
    thick_affine[:3, :3] = direction * thick_res
    thick_affine[:3, 3] = corner + direction @ (thick_res / 2.0)
    return Grid(tuple(int(n) for n in fine_shape), fine_affine), Grid(tuple(int(n) for n in thick_shape), thick_affine)


def reacquire(
    data: np.ndarray, affine: np.ndarray, plane: str = "sagittal", thickness: float = 3.0, inplane: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (3D, on ``affine``) as an acquisition of ``thickness`` mm ``plane`` slices.

    Parameters
    ----------
    plane : str
        ``"sagittal"`` (thick left-right), ``"coronal"`` (thick anterior-posterior) or
        ``"axial"`` (thick head-foot).
    thickness : float
        Slice thickness (mm), contiguous slices, box profile.
    inplane : float, optional
        In-plane voxel size (mm); default the finest native voxel size.

    Returns
    -------
    data : np.ndarray
        float32 on the thick grid (RPI).
    affine : np.ndarray
        Its voxel-to-world affine: every thick voxel sits at the centre of the tissue it averages.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"reacquire needs a 3D image, got shape {data.shape}")
    rpi, rpi_affine = reorient(data, affine, RPI)
    native = Grid(tuple(rpi.shape), rpi_affine)
    inplane = float(np.min(native.zooms)) if inplane is None else float(inplane)
    fine, thick = thick_grid(native, plane, thickness, inplane)
    sampled = resample_to_grid(np.asarray(rpi, dtype=np.float32), rpi_affine, fine, order=1)
    axis = PLANES[plane]
    moved = np.moveaxis(sampled, axis, -1)
    blocks = moved.reshape(*moved.shape[:-1], thick.shape[axis], SUBSAMPLES).mean(axis=-1)
    return np.ascontiguousarray(np.moveaxis(blocks, -1, axis), dtype=np.float32), thick.affine


def reacquire_mask(
    mask: np.ndarray, affine: np.ndarray, plane: str = "sagittal", thickness: float = 3.0, inplane: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A binary mask re-acquired like its image (:func:`reacquire`), then ``>= 0.5``: uint8."""
    share, thick_affine = reacquire((np.asarray(mask) > 0.5).astype(np.float32), affine, plane, thickness, inplane)
    return (share >= 0.5).astype(np.uint8), thick_affine


def field_of_view(data: np.ndarray, affine: np.ndarray, bottom_mm: float, length_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The axial slices (RPI) whose centres lie ``bottom_mm`` to ``bottom_mm + length_mm`` above the
    lowest slice's centre: the same voxels, on the same world positions (nibabel's slicer sets the
    affine). Raises ``ValueError`` when no slice is left."""
    rpi, rpi_affine = reorient(np.asarray(data), affine, RPI)
    step = float(np.sqrt((rpi_affine[:3, 2] ** 2).sum()))
    heights = np.arange(rpi.shape[2]) * step
    kept = np.flatnonzero((heights >= bottom_mm - 1e-6) & (heights < bottom_mm + length_mm - 1e-6))
    if kept.size == 0:
        raise ValueError(f"no slice between {bottom_mm:g} and {bottom_mm + length_mm:g} mm of a {heights[-1]:g} mm stack")
    cut = nib.Nifti1Image(rpi, rpi_affine).slicer[:, :, int(kept[0]) : int(kept[-1]) + 1]
    return np.asarray(cut.dataobj), cut.affine
