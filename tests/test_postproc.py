"""Post-processing: threshold, largest 26-connected component, per-slice hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from lumbo_bids.postproc import binarise, fill_holes_per_slice, keep_largest_component, postprocess


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
    out = postprocess(prob, threshold=0.5)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    expected = np.zeros(prob.shape, np.uint8)
    expected[2:9, 2:9, :] = 1
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (7, 6, 5), elements=st.floats(0, 1, width=32)))
def test_postprocess_properties(prob: np.ndarray) -> None:
    out = postprocess(prob)
    assert out.dtype == np.uint8 and out.shape == prob.shape
    _, count = ndimage.label(out, structure=np.ones((3, 3, 3)))
    assert count <= 1
    np.testing.assert_array_equal(postprocess(out), out)  # idempotent
    kept = keep_largest_component(binarise(prob))
    assert (out.astype(bool) >= kept).all()  # filling only adds voxels
