"""The participant level's preprocessing of one image, in memory and without Nipype.

:class:`Preprocessor` holds every preprocessing step (reorient to SCT "RPI", resample, localise,
centerline from the manual mask or the localiser's heat-map, per-slice crop): each node of the
preprocessing workflow (:mod:`lumbo_bids.interfaces.preproc`, :mod:`lumbo_bids.workflows.preproc`)
is "load -> one of its methods -> save", and :meth:`Preprocessor.run_case` chains the same methods
in memory, so the scripts (base-model training, localiser evaluation, benchmarks), the Python API
and the tests get the arrays that the participant level feeds its network
(``tests/test_preprocess.py`` checks the chain against the workflow's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .centerline import DEFAULT_DEGREE, centerline_from_heatmap, centerline_from_mask
from .geometry import (
    RPI,
    Grid,
    PreprocGeometry,
    crop_around_centerline,
    crop_box_from_centerline,
    reorient,
    resample_mask_to_grid,
    resample_to_grid,
    resampled_grid,
)


@dataclass(frozen=True)
class Preprocessed:
    """One image after :meth:`Preprocessor.run_case`.

    ``resampled``/``mask``: the whole field of view on the isotropic RPI grid (mask uint8 or
    None); ``centerline``: ``(nz, 2)`` in-plane voxel coordinates per slice; ``stack``/
    ``mask_stack``: the per-slice crops (float32 / uint8); ``geometry``: what maps a crop back
    to the source's native grid (:func:`lumbo_bids.geometry.to_native`)."""

    resampled: np.ndarray
    mask: np.ndarray | None
    centerline: np.ndarray
    stack: np.ndarray
    mask_stack: np.ndarray | None
    geometry: PreprocGeometry


class Preprocessor:
    """Reorient, resample to ``resolution`` mm, find the centerline, crop ``crop_size`` around it.

    Parameters
    ----------
    resolution : float
        Isotropic voxel size (mm) of the model's grid.
    crop_size : (int, int)
        In-plane crop around the centerline on each axial slice.
    localiser : path, optional
        Localiser artifact (or SCT ``*_ctr.h5``) for images whose centerline does not come from a mask.
    """

    def __init__(self, resolution: float = 0.5, crop_size: tuple[int, int] = (64, 64), localiser: Path | str | None = None):
        self.resolution, self.crop_size, self.localiser = float(resolution), tuple(crop_size), localiser

    @classmethod
    def from_plan(cls, plan, localiser: Path | str | None = None) -> Preprocessor:
        """The preprocessing of a :class:`~lumbo_bids.plan.ModelPlan` (its resolution and crop)."""
        return cls(plan.resolution, plan.crop_size, localiser)

    # -- the steps (one per node) -----------------------------------------------------------
    @staticmethod
    def reorient(data: np.ndarray, affine: np.ndarray, is_mask: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The Reorient node: ``(data, affine)`` in SCT "RPI" (an exact voxel permutation); a mask
        is binarised (> 0.5, uint8) first."""
        if is_mask:
            data = (np.asarray(data) > 0.5).astype(np.uint8)
        return reorient(data, affine, RPI)

    def resample_to_resolution(self, data: np.ndarray, affine: np.ndarray, is_mask: bool = False) -> tuple[np.ndarray, Grid]:
        """The Resample node: ``(data, grid)`` on the isotropic grid of the same field of view
        (an image linearly, a mask by the mask rule)."""
        target = resampled_grid(Grid(tuple(np.shape(data)), affine), self.resolution)
        if is_mask:
            return resample_mask_to_grid(data, affine, target), target
        return resample_to_grid(data, affine, target, order=1), target

    def localise(self, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """The Localise node: the localiser's cord heat-map of a resampled RPI image."""
        if self.localiser is None:
            raise ValueError("no mask and no localiser to find the centerline")
        from .model.localise import localise_heatmap

        return localise_heatmap(self.localiser, image, affine)

    @staticmethod
    def find_centerline(mask=None, heatmap=None, zooms=None, degree: int = DEFAULT_DEGREE) -> np.ndarray:
        """The Centerline node: ``(nz, 2)`` in-plane points from a mask, else from a heat-map."""
        if mask is not None:
            return centerline_from_mask(np.asarray(mask) > 0.5, degree=degree)
        if heatmap is None:
            raise ValueError("Centerline needs a mask or a heat-map")
        return centerline_from_heatmap(heatmap, degree=degree, zooms=zooms)

    def crop(self, image: np.ndarray, grid: Grid, xy: np.ndarray):
        """The Crop node: ``(stack, box)``, the per-slice crop (float32) around the centerline."""
        box = crop_box_from_centerline(xy, grid, self.crop_size)
        return crop_around_centerline(image, box).astype(np.float32), box

    @staticmethod
    def crop_mask(mask: np.ndarray, box) -> np.ndarray:
        """A mask cropped as :meth:`crop` cropped its image (uint8)."""
        return crop_around_centerline((np.asarray(mask) > 0.5).astype(np.uint8), box).astype(np.uint8)

    # -- the chain ----------------------------------------------------------------------------
    def resample(self, data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None):
        """``(image, mask or None, geometry without crop)`` on the resampled RPI grid (the
        Reorient and Resample nodes, for the image and its mask)."""
        rpi_data, rpi_affine = self.reorient(np.asarray(data), affine)
        image, grid = self.resample_to_resolution(rpi_data, rpi_affine)
        geometry = PreprocGeometry(Grid(np.shape(data), affine), Grid(rpi_data.shape, rpi_affine), grid, None)
        if mask is None:
            return image, None, geometry
        rpi_mask, mask_affine = self.reorient(mask, affine, is_mask=True)
        return image, self.resample_to_resolution(rpi_mask, mask_affine, is_mask=True)[0], geometry

    def centerline(self, image: np.ndarray, grid: Grid, mask: np.ndarray | None = None) -> np.ndarray:
        """From ``mask`` when given, else from the localiser's heat-map (the Localise and Centerline nodes)."""
        if mask is not None:
            return self.find_centerline(mask=mask)
        return self.find_centerline(heatmap=self.localise(image, grid.affine), zooms=grid.zooms)

    def run_case(
        self, data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None, use_mask: bool = True
    ) -> Preprocessed:
        """Everything up to the network's input (intensities still raw).

        ``use_mask=False`` finds the centerline with the localiser even when a mask is given
        (the mask is still cropped alongside, for scoring)."""
        image, cord, geometry = self.resample(data, affine, mask)
        grid = geometry.resampled
        xy = self.centerline(image, grid, cord if use_mask else None)
        stack, box = self.crop(image, grid, xy)
        mask_stack = None if cord is None else self.crop_mask(cord, box)
        geometry = PreprocGeometry(geometry.native, geometry.rpi, grid, box)
        return Preprocessed(image, cord, xy, stack, mask_stack, geometry)
