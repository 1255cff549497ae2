"""QC figures on a synthetic image whose cord position and size are known."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lumbo_bids.reports.figures import MIN_SHORT_PX, PANEL_PX, axial_mosaic, display_size, figure_path, sagittal_figure


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
    rgb = _read_png(axial_mosaic(image, mask, affine, n=4, columns=4))
    assert rgb.shape[:2] == (PANEL_PX, 4 * PANEL_PX + 3 * 4)  # a row of four panels, 4 px apart
    assert ((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum() > 20
    grid = _read_png(axial_mosaic(image, mask, affine, n=6, columns=3))
    assert grid.shape[:2] == (2 * PANEL_PX + 4, 3 * PANEL_PX + 2 * 4)  # two rows of three


def _red_mask(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)


def _red(rgb: np.ndarray) -> int:
    return int(_red_mask(rgb).sum())


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


def _bbox(pixels: np.ndarray) -> tuple[int, int]:
    """Height and width of the box around the true pixels."""
    rows, cols = np.nonzero(pixels)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_display_size_keeps_the_physical_aspect_and_a_readable_short_side():
    assert display_size(256, 300, 1.0) == (683, 800)  # a usual volume: an 800 px long side
    width, height = display_size(80, 16, 1.0)  # a 16 mm-long volume is upscaled, not a strip
    assert height == MIN_SHORT_PX and width == 5 * MIN_SHORT_PX
    assert display_size(300, 300, 4.0) == (1200, 1200)  # its own resolution when finer
    assert display_size(1000, 1000, 4.0) == (1600, 1600)  # capped


def test_short_volume_sagittal_is_big_and_at_its_physical_aspect():
    """The bundled unf01 case: 141 mm anterior-posterior, 16 slices of 1 mm. The view keeps 80 mm
    around the cord, 80:16, at least 300 px high (the old figure was a 331×70 strip)."""
    image = np.random.default_rng(0).random((40, 141, 16)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[18:23, 60:70, :] = 1
    rgb = _read_png(sagittal_figure(image, mask, np.eye(4)))[..., :3]
    assert rgb.shape[:2] == (MIN_SHORT_PX, 5 * MIN_SHORT_PX)
    _, cord_width = _bbox(_red_mask(rgb))
    assert abs(cord_width - 10 * MIN_SHORT_PX / 16) <= 6  # 10 mm of cord at 18.75 px/mm


def test_thick_slices_keep_their_physical_aspect():
    """sctTesting T2starw's grid: 0.5 × 0.5 × 7.5 mm, 9 slices: 27 mm wide, 67.5 mm high."""
    image = np.ones((49, 54, 9), np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[20:28, 20:34, 2:7] = 1  # 7 mm anterior-posterior, 37.5 mm high
    rgb = _read_png(sagittal_figure(image, mask, np.diag([0.5, 0.5, 7.5, 1.0])))[..., :3]
    assert rgb.shape[0] / rgb.shape[1] == pytest.approx(67.5 / 27, rel=0.01) and min(rgb.shape[:2]) >= MIN_SHORT_PX
    height, width = _bbox(_red_mask(rgb))
    assert height / width == pytest.approx(37.5 / 7, rel=0.1)


def test_axial_panels_are_square_in_millimetres():
    """In-plane voxels of 0.5 × 1 mm: a 10 × 10 mm cord is drawn as a square."""
    image = np.ones((80, 40, 5), np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[30:50, 15:25, :] = 1  # 20 voxels of 0.5 mm by 10 voxels of 1 mm
    rgb = _read_png(axial_mosaic(image, mask, np.diag([0.5, 1.0, 3.0, 1.0]), n=1))[..., :3]
    height, width = _bbox(_red_mask(rgb))
    assert height == pytest.approx(width, abs=3) and width == pytest.approx(10 * PANEL_PX / 40, abs=4)


def test_plain_views_have_the_same_size_and_no_overlay():
    image, mask, affine = _synthetic()
    centerline = np.array([[16.0, 18.4, z] for z in range(60)])
    for draw in (
        lambda **kw: sagittal_figure(image, mask, affine, centerline, **kw),
        lambda **kw: axial_mosaic(image, mask, affine, **kw),
    ):
        with_overlay, plain = _read_png(draw())[..., :3], _read_png(draw(overlay=False))[..., :3]
        assert with_overlay.shape == plain.shape
        assert _red(with_overlay) > 20 and _red(plain) == 0


def test_figure_path_names_views_and_plain_versions(tmp_path):
    stem = "sub-01_ses-1_space-orig_label-SC_desc-T2w"
    assert figure_path(tmp_path, "01", stem, "sagittal") == tmp_path / "sub-01" / "figures" / f"{stem}_sagittal.png"
    assert figure_path(tmp_path, "01", stem, "axial", overlay=False).name == f"{stem}_axial_plain.png"
    with pytest.raises(ValueError, match="unknown view"):
        figure_path(tmp_path, "01", stem, "coronal")
