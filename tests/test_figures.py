"""QC figures on a synthetic image whose cord position is known."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lumbo_bids.reports.figures import axial_mosaic, sagittal_figure


def _synthetic():
    image = np.zeros((40, 50, 60), np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[18:23, 20:26, 5:55] = 1
    image[mask > 0] = 100.0
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    return image, mask, affine


def _read_png(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


def test_sagittal_figure_draws_mask_centerline_and_box():
    image, mask, affine = _synthetic()
    centerline = np.array([[16.0, 18.4, z] for z in range(60)])  # world mm
    corners = np.array([[x, y, z] for x in (10.0, 20.0) for y in (12.0, 24.0) for z in (5.0, 54.0)])
    rgb = _read_png(sagittal_figure(image, mask, affine, centerline, corners))[..., :3]
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    yellow = (rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.3)
    cyan = (rgb[..., 0] < 0.3) & (rgb[..., 1] > 0.8) & (rgb[..., 2] > 0.8)
    assert red.sum() > 50 and yellow.sum() > 20 and cyan.sum() > 20
    plain = _read_png(sagittal_figure(image, np.zeros_like(mask), affine))[..., :3]
    assert ((plain[..., 0] > 0.8) & (plain[..., 1] < 0.3)).sum() == 0  # no contour without a mask


def test_axial_mosaic_has_one_panel_per_slice():
    image, mask, affine = _synthetic()
    rgb = _read_png(axial_mosaic(image, mask, affine, n=4))
    assert rgb.shape[1] > 2 * rgb.shape[0]  # a row of panels
    assert ((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum() > 20


def _red(rgb: np.ndarray) -> int:
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum())


@pytest.mark.parametrize("shape", [(40, 50, 1), (1, 50, 60), (40, 1, 60), (1, 1, 1)])
def test_figures_draw_any_shape(shape):
    """One axial, sagittal or coronal slice, or one voxel: both figures are drawn; the contour of a
    cord on one thick axial slice (the sagittal view is then one row of voxels) is visible."""
    image = np.linspace(0, 100, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(n // 3, max(n // 3 + 1, 2 * n // 3)) for n in shape)] = 1
    affine = np.diag([0.5, 0.5, 7.5, 1.0])
    sagittal = _read_png(sagittal_figure(image, mask, affine))[..., :3]
    axial = _read_png(axial_mosaic(image, mask, affine))[..., :3]
    assert _red(axial) > 0
    if shape[2] == 1:
        assert _red(sagittal) > 0
        assert axial.shape[1] < 2 * axial.shape[0]  # one panel, not eight copies of the same slice
