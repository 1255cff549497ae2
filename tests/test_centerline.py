"""Tests of lumbo_bids.centerline on synthetic cords with a known axis."""

from __future__ import annotations

import numpy as np
import pytest
from nibabel.affines import apply_affine, from_matvec

from lumbo_bids.centerline import (
    centerline_from_heatmap,
    centerline_from_mask,
    centerline_image,
    centerline_mask_extent,
    centerline_world,
    fit_centerline,
)

VOXEL = 0.5  # mm
SHAPE = (80, 80, 120)
ORIGIN = np.array([-20.0, -20.0, -30.0])
AFFINE = from_matvec(np.eye(3) * VOXEL, ORIGIN)


def axis_voxels(tilt_x: float, tilt_y: float, centre) -> np.ndarray:
    """(nz, 2) true in-plane voxel position of a straight tilted axis on every slice."""
    z_world = ORIGIN[2] + VOXEL * np.arange(SHAPE[2])
    dz = z_world - centre[2]
    x = centre[0] + np.tan(np.radians(tilt_x)) * dz
    y = centre[1] + np.tan(np.radians(tilt_y)) * dz
    return (np.column_stack([x, y]) - ORIGIN[:2]) / VOXEL


def distance_to_axis(tilt_x: float, tilt_y: float, centre) -> np.ndarray:
    """Perpendicular distance (mm) of every voxel centre to the axis."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    v = apply_affine(AFFINE, ijk) - np.asarray(centre)
    d = np.array([np.tan(np.radians(tilt_x)), np.tan(np.radians(tilt_y)), 1.0])
    d /= np.linalg.norm(d)
    return np.linalg.norm(v - np.outer(v @ d, d), axis=1).reshape(SHAPE)


def covered(z_range: tuple[int, int]) -> np.ndarray:
    z = np.zeros(SHAPE, dtype=bool)
    z[:, :, z_range[0] : z_range[1] + 1] = True
    return z


CASES = [  # tilt x (deg), tilt y (deg), axis centre (mm), covered slices
    (15.0, 10.0, (1.0, -2.0, 0.0), (20, 90)),
    (-15.0, 10.0, (-3.3, 2.7, 5.0), (0, 60)),
    (12.0, -8.0, (0.4, 0.1, -4.0), (45, 119)),
]


def assert_inside_image(xy: np.ndarray) -> None:
    assert xy.shape == (SHAPE[2], 2) and np.all(np.isfinite(xy))
    assert np.all(xy >= 0) and np.all(xy <= np.array(SHAPE[:2]) - 1)


@pytest.mark.parametrize("tilt_x, tilt_y, centre, z_range", CASES)
def test_mask_centerline_recovers_tilted_cylinder_axis(tilt_x, tilt_y, centre, z_range):
    mask = (distance_to_axis(tilt_x, tilt_y, centre) <= 3.0) & covered(z_range)
    truth = axis_voxels(tilt_x, tilt_y, centre)
    xy = centerline_from_mask(mask)
    assert_inside_image(xy)
    z0, z1 = centerline_mask_extent(mask)
    assert (z0, z1) == z_range
    error_mm = VOXEL * np.linalg.norm(xy - truth, axis=1)
    assert error_mm[z0 : z1 + 1].max() <= 0.5
    # a straight cord: the linear extension keeps following it where it stays in the image
    in_image = np.all((truth >= 0) & (truth <= np.array(SHAPE[:2]) - 1), axis=1)
    assert error_mm[in_image].max() <= 1.0


def test_mask_centerline_fills_gaps_and_follows_a_curved_cord():
    z = np.arange(SHAPE[2])
    truth = np.column_stack([40 + 10 * np.sin(z / 119 * 1.5 * np.pi), 38 + 0.002 * (z - 60) ** 2])
    ii, jj = np.indices(SHAPE[:2])
    mask = np.zeros(SHAPE, dtype=bool)
    for k in z:
        mask[:, :, k] = (ii - truth[k, 0]) ** 2 + (jj - truth[k, 1]) ** 2 <= 6.0**2
    mask[:, :, 50:62] = False  # missing slices in the middle
    xy = centerline_from_mask(mask)
    assert VOXEL * np.linalg.norm(xy - truth, axis=1).max() <= 0.5


def test_mask_centerline_extension_is_clipped_into_the_image():
    mask = (distance_to_axis(40.0, -35.0, (12.0, -12.0, -10.0)) <= 2.0) & covered((30, 50))
    xy = centerline_from_mask(mask)
    assert_inside_image(xy)
    assert xy[:, 0].max() == SHAPE[0] - 1 and xy[:, 1].min() == 0  # the steep extension hit the border
    held = centerline_from_mask(mask, extend=False)
    assert_inside_image(held)
    assert np.allclose(held[:30], held[30]) and np.allclose(held[51:], held[50])


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        centerline_from_mask(np.zeros(SHAPE, dtype=bool))
    with pytest.raises(ValueError, match="empty"):
        centerline_mask_extent(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="no cord"):
        centerline_from_heatmap(np.full((5, 5, 5), 0.4))


@pytest.mark.parametrize("tilt_x, tilt_y, centre, z_range", CASES[:2])
def test_heatmap_centerline_recovers_axis_despite_noise_and_a_decoy(tilt_x, tilt_y, centre, z_range):
    rng = np.random.default_rng(7)
    dist = distance_to_axis(tilt_x, tilt_y, centre)
    heat = np.exp(-(dist**2) / (2 * 1.5**2)) * covered(z_range) + rng.normal(0, 0.1, SHAPE)
    # a decoy bigger than the cord on three slices, far from it: picked on those slices, then rejected
    ii, jj = np.indices(SHAPE[:2])
    decoy = ((ii - 70) ** 2 + (jj - 8) ** 2 <= 8**2) * 0.9
    for k in (z_range[0] + 5, z_range[0] + 6, z_range[0] + 30):
        heat[:, :, k] += decoy
    truth = axis_voxels(tilt_x, tilt_y, centre)
    xy = centerline_from_heatmap(heat, threshold=0.5)
    assert_inside_image(xy)
    error_mm = VOXEL * np.linalg.norm(xy - truth, axis=1)
    assert error_mm[z_range[0] : z_range[1] + 1].max() <= 0.5


def test_heatmap_point_is_heat_weighted_within_the_hottest_blob():
    heat = np.zeros((20, 20, 1))
    heat[2:6, 2:6, 0] = 0.6  # larger but cooler blob: 16 voxels x 0.6 = 9.6
    heat[10:13, 10:14, 0] = np.linspace(0.6, 1.2, 4)[None, :]  # 12 voxels, 10.8 of heat, hotter at high y
    ((x, y),) = centerline_from_heatmap(heat, threshold=0.5)
    assert x == pytest.approx(11.0)
    assert y == pytest.approx(np.average(np.arange(10, 14), weights=np.linspace(0.6, 1.2, 4)))
    assert y > 11.5 + 0.1  # pulled towards the heat, not the blob's geometric centre


def test_slice_blobs_are_the_regions_of_each_slice_alone():
    """The one-pass candidate search equals labelling every slice on its own (4-connected,
    in-plane): regions that touch across slices stay apart, and each region's heat-weighted
    centre, peak and heat mass are those of its slice."""
    from scipy import ndimage

    from lumbo_bids.centerline import _slice_blobs

    rng = np.random.default_rng(0)
    heat = ndimage.gaussian_filter(rng.random((30, 24, 12)), (1.0, 1.0, 0.0)).astype(np.float32)
    heat[:, :, 5:7] = 0.0
    heat[3:8, 3:8, 5:7] = 0.9  # one column through two slices: two candidates, not one
    heat[9, 9, 5], heat[10, 10, 5] = 0.9, 0.9  # diagonal neighbours: two regions in 4-connectivity
    threshold = float(np.quantile(heat, 0.6))
    expected = []
    for k in range(heat.shape[2]):
        labels, count = ndimage.label(heat[:, :, k] > threshold)
        for i in range(1, count + 1):
            region = labels == i
            weights = heat[:, :, k][region].astype(np.float64)
            xs, ys = np.nonzero(region)
            expected.append((k, np.average(xs, weights=weights), np.average(ys, weights=weights), weights.max(), weights.sum()))
    found = _slice_blobs(heat, threshold)
    assert [c[0] for c in found].count(5) == 3 and [c[0] for c in found].count(6) == 1
    assert len(found) == len(expected) > 30
    np.testing.assert_allclose(np.array(found), np.array(expected), rtol=1e-9, atol=1e-9)


def test_fit_centerline_polynomial_degree_weights_and_extension():
    z = np.arange(10, 40, dtype=float)
    poly = np.column_stack([5 + 0.3 * z - 0.01 * z**2 + 1e-4 * z**3, 20 - 0.1 * z])
    fitted = fit_centerline(z, poly, 50)
    np.testing.assert_allclose(fitted[10:40], poly, atol=1e-8)  # degree 5 reproduces a cubic
    slope = fitted[10] - fitted[11]
    np.testing.assert_allclose(fitted[:10] - fitted[10], np.outer(np.arange(10, 0, -1), slope), rtol=0.2)
    # one point with negligible weight far off: ignored; with equal weight: pulls the curve
    noisy = poly.copy()
    noisy[15] += 30.0
    w = np.ones(z.size)
    w[15] = 1e-9
    assert np.abs(fit_centerline(z, noisy, 50, weights=w)[10:40] - poly).max() < 1e-3
    assert np.abs(fit_centerline(z, noisy, 50)[10:40] - poly).max() > 1.0
    # two slices only: the degree drops to 1 (a line), not a wild polynomial
    two = fit_centerline(np.array([3.0, 7.0]), np.array([[1.0, 1.0], [3.0, 9.0]]), 11)
    np.testing.assert_allclose(two[:, 0], 1.0 + 0.5 * (np.arange(11) - 3))
    np.testing.assert_allclose(fit_centerline([4.0], [[2.0, 3.0]], 6), np.tile([2.0, 3.0], (6, 1)))
    with pytest.raises(ValueError):
        fit_centerline([], np.zeros((0, 2)), 5)


def test_centerline_image_and_world_coordinates():
    xy = np.array([[1.2, 2.6], [3.5, 0.4], [9.0, 1.0], [np.nan, 1.0]])
    img = centerline_image(xy, (5, 4, 4))
    assert img.dtype == np.uint8 and img.sum() == 2  # out-of-image and NaN points are skipped
    assert img[1, 3, 0] == 1 and img[4, 0, 1] == 1
    assert np.all(img.sum(axis=(0, 1)) <= 1)
    affine = from_matvec(np.array([[0, 0.5, 0.1], [-0.5, 0, 0], [0, 0.1, 2.0]]), [10, -4, 7])
    world = centerline_world(xy[:3], affine)
    assert world.shape == (3, 3)
    for k in range(3):
        np.testing.assert_allclose(world[k], affine[:3, :3] @ [*xy[k], k] + affine[:3, 3])


def test_heatmap_centerline_ignores_a_consistent_false_track_beyond_the_cord() -> None:
    """Below the conus a localiser may fire on something else (a vessel, bowel, fat) slice after
    slice: a second track, far from the cord's course and out of reach of its end. The path
    keeps the cord's track (more confident and longer) and the end of the curve stays on the
    cord's course instead of bending to the false track."""
    tilt_x, tilt_y, centre, z_range = 0.0, 12.0, (0.0, 0.0, 0.0), (30, 119)
    rng = np.random.default_rng(3)
    heat = np.exp(-(distance_to_axis(tilt_x, tilt_y, centre) ** 2) / (2 * 1.5**2)) * covered(z_range)
    heat = heat * 0.95 + rng.normal(0, 0.05, SHAPE)
    ii, jj = np.indices(SHAPE[:2])
    track = ((ii - 72) ** 2 + (jj - 10) ** 2 <= 3**2) * 0.8  # 26 mm from the cord, 29 slices long
    heat[:, :, 0:29] += track[..., None]
    truth = axis_voxels(tilt_x, tilt_y, centre)
    xy = centerline_from_heatmap(heat, threshold=0.5, zooms=(VOXEL,) * 3)
    assert_inside_image(xy)
    error_mm = VOXEL * np.linalg.norm(xy - truth, axis=1)
    assert error_mm[z_range[0] :].max() <= 0.5
    assert error_mm[: z_range[0]].max() <= 2.0  # prolonged along the cord, not towards the track


def test_heatmap_path_respects_the_voxel_size() -> None:
    """Two detections 8 voxels apart on consecutive slices: a possible step for 2 mm slices of
    0.5 mm voxels (4 mm sideways over 2 mm), an impossible one for 0.1 mm slices."""
    heat = np.zeros((20, 20, 2))
    heat[4, 4, 0] = 0.9
    heat[12, 4, 1] = 0.8
    thick = centerline_from_heatmap(heat, zooms=(0.5, 0.5, 2.0), degree=1, extend=False)
    thin = centerline_from_heatmap(heat, zooms=(0.5, 0.5, 0.1), degree=1, extend=False)
    np.testing.assert_allclose(thick, [[4, 4], [12, 4]])  # one path through both
    np.testing.assert_allclose(thin, [[4, 4], [4, 4]])  # only the hotter point is kept
