"""The participant level's preprocessing of one image, in memory and without Nipype.

:class:`Preprocessor` composes the pure steps exactly as the preprocessing workflow's nodes do
(:mod:`lumbo_bids.workflows.preproc`: reorient to SCT "RPI", resample, centerline from the
manual mask or the localiser's heat-map, per-slice crop), so the scripts (base-model training,
localiser evaluation, benchmarks) and the tests get the arrays that the participant level
feeds its network; ``tests/test_preprocess.py`` checks that both give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .centerline import centerline_from_heatmap, centerline_from_mask
from .geometry import (
    RPI,
    Grid,
    PreprocGeometry,
    crop_around_centerline,
    crop_box_from_centerline,
    forward,
    reorient,
    resample_mask_to_grid,
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

    def resample(self, data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None):
        """``(image, mask or None, geometry without crop)`` on the resampled RPI grid (the
        Reorient and Resample nodes: image linear, mask by the mask rule)."""
        image, geometry = forward(data, affine, self.resolution)
        if mask is None:
            return image, None, geometry
        rpi_mask, rpi_affine = reorient((np.asarray(mask) > 0.5).astype(np.uint8), affine, RPI)
        return image, resample_mask_to_grid(rpi_mask, rpi_affine, geometry.resampled), geometry

    def centerline(self, image: np.ndarray, grid: Grid, mask: np.ndarray | None = None) -> np.ndarray:
        """The Centerline node: from ``mask`` when given, else from the localiser's heat-map."""
        if mask is not None:
            return centerline_from_mask(mask > 0.5)
        if self.localiser is None:
            raise ValueError("no mask and no localiser to find the centerline")
        from .model.localise import localise_heatmap

        return centerline_from_heatmap(localise_heatmap(self.localiser, image, grid.affine), zooms=grid.zooms)

    def run_case(
        self, data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None, use_mask: bool = True
    ) -> Preprocessed:
        """Everything up to the network's input (intensities still raw).

        ``use_mask=False`` finds the centerline with the localiser even when a mask is given
        (the mask is still cropped alongside, for scoring)."""
        image, cord, geometry = self.resample(data, affine, mask)
        grid = geometry.resampled
        xy = self.centerline(image, grid, cord if use_mask else None)
        box = crop_box_from_centerline(xy, grid, self.crop_size)
        mask_stack = None if cord is None else crop_around_centerline(cord, box).astype(np.uint8)
        geometry = PreprocGeometry(geometry.native, geometry.rpi, grid, box)
        return Preprocessed(image, cord, xy, crop_around_centerline(image, box).astype(np.float32), mask_stack, geometry)
