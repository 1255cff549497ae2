"""Post-processing: threshold, the cord's 26-connected components, per-slice hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from lumbo_bids.metrics import dice
from lumbo_bids.postproc import (
    binarise,
    cord_end,
    fill_holes_per_slice,
    keep_cord_components,
    keep_largest_component,
    postprocess,
    trim_thin_tail,
)


def test_binarise_is_strict() -> None:
    prob = np.array([0.0, 0.49, 0.5, 0.51, 1.0], np.float32)
    np.testing.assert_array_equal(binarise(prob), [False, False, False, True, True])
    np.testing.assert_array_equal(binarise(prob, threshold=0.2), [False, True, True, True, True])
    assert binarise(prob).dtype == bool


def test_keep_largest_component_drops_smaller_blobs() -> None:
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:4, 1:4, 1:4] = 1  # 27 voxels
    mask[6:8, 6:8, 6:8] = 1  # 8 voxels
    mask[0, 9, 9] = 1  # 1 voxel
    out = keep_largest_component(mask)
    assert out.dtype == bool and out.sum() == 27 and out[1:4, 1:4, 1:4].all()


def test_corner_contact_is_connected_26() -> None:
    """Two cubes touching only by a corner form one 26-connected component."""
    mask = np.zeros((6, 6, 6), bool)
    mask[0:2, 0:2, 0:2] = True
    mask[2:5, 2:5, 2:5] = True  # touches (1,1,1) through the corner (2,2,2)
    mask[5, 0, 5] = True  # isolated
    out = keep_largest_component(mask)
    assert out.sum() == 8 + 27 and not out[5, 0, 5]


def test_keep_largest_component_empty_and_single() -> None:
    empty = np.zeros((4, 4, 4), bool)
    assert not keep_largest_component(empty).any()
    single = empty.copy()
    single[2, 2, 2] = True
    np.testing.assert_array_equal(keep_largest_component(single), single)
    with pytest.raises(ValueError, match="3D"):
        keep_largest_component(np.ones((4, 4), bool))


def test_fill_holes_per_slice_fills_an_open_tube() -> None:
    """A tube open at both ends has no 3D hole, but each axial slice of it does."""
    mask = np.zeros((9, 9, 5), bool)
    mask[2:7, 2:7, :] = True
    mask[4, 4, :] = False  # a channel through the whole tube
    assert not ndimage.binary_fill_holes(mask)[4, 4, :].any()  # 3D filling would not help
    out = fill_holes_per_slice(mask)
    assert out[2:7, 2:7, :].all() and out.sum() == 25 * 5


def test_fill_holes_per_slice_leaves_open_shapes_and_other_axes() -> None:
    mask = np.zeros((7, 7, 7), bool)
    mask[1:6, 1:6, 3] = True
    mask[3, 3:7, 3] = False  # a notch reaching the border of the shape: not a hole
    out = fill_holes_per_slice(mask)
    np.testing.assert_array_equal(out, mask)
    # a hole that is closed only in a sagittal plane [x, :, :] is not filled
    sag = np.zeros((5, 7, 7), bool)
    sag[2, 1:6, 1:6] = True
    sag[2, 3, 3] = False
    np.testing.assert_array_equal(fill_holes_per_slice(sag), sag)


def test_postprocess_chain() -> None:
    prob = np.zeros((12, 12, 6), np.float32)
    prob[2:9, 2:9, :] = 0.9  # the cord
    prob[5, 5, 2] = 0.1  # a hole inside it
    prob[11, 11, 0] = 0.95  # a far speck
    prob[0, 0, 5] = 0.5  # on the threshold: background
    out = postprocess(prob, threshold=0.5, radius_vox=4)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    expected = np.zeros(prob.shape, np.uint8)
    expected[2:9, 2:9, :] = 1
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (7, 6, 5), elements=st.floats(0, 1, width=32)))
def test_postprocess_properties(prob: np.ndarray) -> None:
    out = postprocess(prob, radius_vox=1.5)
    assert out.dtype == np.uint8 and out.shape == prob.shape
    np.testing.assert_array_equal(postprocess(out, radius_vox=1.5), out)  # idempotent
    kept = keep_cord_components(binarise(prob), radius_vox=1.5)
    assert (out.astype(bool) >= kept).all()  # filling only adds voxels
    assert (kept <= binarise(prob)).all()  # selection only removes voxels
    labels, count = ndimage.label(kept, structure=np.ones((3, 3, 3)))
    if count > 1:  # several components are kept only when each reaches the tube
        tube = np.zeros(prob.shape, bool)
        tube[2:5, 1:5, :] = True  # (x - 3)^2 + (y - 2.5)^2 <= 2.25 lies inside this box
        assert all((tube & (labels == k)).any() for k in range(1, count + 1))


def _thick_slice_cord(shape=(32, 32, 60), radius=4.0, gaps=(10, 11, 24, 25, 26, 41)) -> np.ndarray:
    """A cylinder along z through the stack's centre, broken on a few slices (3 mm slices seen at 0.5 mm)."""
    xs, ys = np.meshgrid(np.arange(shape[0]) - 15.5, np.arange(shape[1]) - 15.5, indexing="ij")
    cord = np.zeros(shape, bool)
    cord[...] = (xs**2 + ys**2 <= radius**2)[..., None]
    cord[:, :, list(gaps)] = False
    return cord


def test_cord_broken_along_z_is_kept_whole() -> None:
    """Thick-slice prediction: 4 pieces of cord along z and a false positive beside it."""
    cord = _thick_slice_cord()
    prob = cord.astype(np.float32) * 0.9
    prob[26:30, 2:6, 30:40] = 0.9  # a blob 12 voxels (6 mm) away from the cord's axis
    out = postprocess(prob)
    np.testing.assert_array_equal(out.astype(bool), cord)
    largest = keep_largest_component(binarise(prob))  # the old rule lost most of the cord
    assert largest.sum() < 0.5 * cord.sum()


def test_pieces_far_below_the_cord_are_not_cord() -> None:
    """Below the conus the network may fire on a clump of nerve roots: in the tube, but 25 mm
    (50 slices) below the end of the cord. Gaps of a few slices (thick slices) are bridged."""
    cord = _thick_slice_cord(shape=(32, 32, 200), gaps=(120, 121, 122, 150, 151))
    cord[:, :, :100] = False  # the conus tip at slice 100
    clump = np.zeros_like(cord)
    clump[13:19, 13:19, 10:50] = True  # on the axis, slices 10-49
    out = keep_cord_components(cord | clump)
    np.testing.assert_array_equal(out, cord)
    assert keep_cord_components(cord | clump, max_gap_vox=60).sum() == (cord | clump).sum()


def test_cord_components_follow_a_given_centerline() -> None:
    cord = np.roll(_thick_slice_cord(), 10, axis=0)  # cord at x = 25.5, off the stack's centre
    prob = cord.astype(np.float32)
    prob[2:6, 14:18, 5:8] = 1.0  # a speck on the stack's centre, far from this cord
    line = np.tile([25.5, 15.5], (prob.shape[2], 1))
    np.testing.assert_array_equal(keep_cord_components(prob > 0.5, line), cord)
    # no component reaches the tube: the largest one is kept
    far = np.tile([0.0, 0.0], (prob.shape[2], 1))
    np.testing.assert_array_equal(keep_cord_components(prob > 0.5, far), keep_largest_component(prob > 0.5))
    with pytest.raises(ValueError, match="centerline"):
        keep_cord_components(prob > 0.5, line[:-1])


# -- the cord's lower end ----------------------------------------------------------------------
def _cone_probability(tip=30, taper=40, radius=8.0, shape=(41, 41, 140), p_cord=0.9, p_taper=0.35):
    """A cord of ``radius`` voxels tapering (radius ~ sqrt(height above the tip)) to a tip at slice
    ``tip``; probability ``p_cord`` on the full cord, ``p_taper`` on the taper."""
    xs, ys = np.mgrid[: shape[0], : shape[1]]
    r2 = (xs - shape[0] // 2) ** 2 + (ys - shape[1] // 2) ** 2
    prob = np.zeros(shape, dtype=np.float32)
    truth = np.zeros(shape, dtype=bool)
    for z in range(tip, shape[2]):
        scale = min(1.0, (z - tip + 1) / taper) ** 0.5
        inside = r2 <= (radius * scale) ** 2
        truth[:, :, z] = inside
        prob[:, :, z][inside] = p_cord if z >= tip + taper else p_taper
    return prob, truth


def test_the_hysteresis_follows_a_faint_taper_down_to_the_tip():
    prob, truth = _cone_probability()
    plain = keep_cord_components(binarise(prob, 0.5))
    assert np.flatnonzero(plain.any(axis=(0, 1)))[0] == 70  # the faint taper is lost at 0.5
    mask = postprocess(prob, 0.5)
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    assert z[0] <= 32 and dice(mask, truth) > 0.97


def test_the_hysteresis_stops_where_the_region_widens():
    prob, truth = _cone_probability()
    xs, ys = np.mgrid[:41, :41]
    prob[:, :, :50][((xs - 20) ** 2 + (ys - 20) ** 2) <= 12**2] = 0.3  # a wide faint block below (roots around)
    mask = postprocess(prob, 0.5)
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    assert 50 <= z[0] <= 70 and not mask[:, :, :50].any()


def test_a_thin_strand_below_the_tip_is_trimmed_but_the_tip_is_kept():
    prob, truth = _cone_probability(p_taper=0.9)
    prob[20:22, 20:22, 0:30] = 0.95  # a 1 x 1 mm strand (filum or root) 15 mm long under the tip
    mask = postprocess(prob, 0.5)
    assert not mask[:, :, :28].any() and mask[:, :, 31:].any()
    assert dice(mask, truth) > 0.99
    short, _ = _cone_probability(p_taper=0.9)
    short[20:22, 20:22, 25:30] = 0.95  # 2.5 mm of thin tip: a conus may end like that
    np.testing.assert_array_equal(trim_thin_tail(binarise(short, 0.5)), binarise(short, 0.5))
    cervical = np.zeros((20, 20, 30), dtype=bool)
    cervical[5:15, 5:15, :] = True  # the cord leaves the stack at the bottom: nothing to do
    np.testing.assert_array_equal(cord_end(cervical, cervical.astype(np.float32), 0.5), cervical)


def test_a_piece_below_a_gap_under_a_tapered_cord_is_roots_not_cord():
    """Sagittal thick slices: the cord tapers to its tip, a few empty slices, then the bundled
    roots of the cauda equina, on the axis and within the chaining gap: dropped. The same piece
    under a cord that stops at full width (dropped slices) is kept."""
    from lumbo_bids.postproc import drop_below_conus

    prob, truth = _cone_probability(tip=60, p_taper=0.9)  # the tip at slice 60, a 20 mm taper
    roots = np.zeros_like(truth)
    roots[17:24, 17:24, 5:54] = True  # the bundle from slice 53 down: a 6-slice (3 mm) gap
    prob[roots] = 0.9
    assert keep_cord_components(binarise(prob, 0.5))[:, :, :54].any()  # chained across the gap
    mask = postprocess(prob, 0.5)
    assert not mask[:, :, :59].any() and dice(mask, truth) > 0.99
    cut = truth.copy()
    cut[:, :, :100] = False  # a full-width cord that stops at slice 100 above a 3 mm gap
    below = cut.copy()
    below[:, :, 60:94] = cut[:, :, 100:101]  # ... and goes on below it (a dropped thick slice)
    np.testing.assert_array_equal(drop_below_conus(below), below)
    np.testing.assert_array_equal(drop_below_conus(truth), truth)  # one piece: nothing to do
