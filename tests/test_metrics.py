"""Metrics against values computed by hand on small synthetic masks (anisotropic voxels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from lumbo_bids.metrics import (
    dice,
    hausdorff95,
    per_slice_dice,
    relative_volume_difference,
    volume_mm3,
)


def _mask(shape: tuple[int, ...], *voxels: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for v in voxels:
        mask[v] = True
    return mask


def test_dice_hand_values() -> None:
    a = np.zeros((4, 4, 2), np.uint8)
    b = np.zeros((4, 4, 2), np.uint8)
    a[0:2, 0:2, 0] = 1  # 4 voxels
    b[1:3, 0:2, 0] = 1  # 4 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    b[:] = 0
    b[0:2, 0:2, :] = 1  # 8 voxels, contains a
    assert dice(a, b) == pytest.approx(2 * 4 / 12)
    assert dice(a, a) == 1.0
    assert dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 3))) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice(a, a[:, :, :1])


@settings(max_examples=40, deadline=None)
@given(arrays(bool, (4, 3, 5)), arrays(bool, (4, 3, 5)))
def test_dice_properties(a: np.ndarray, b: np.ndarray) -> None:
    value = dice(a, b)
    assert 0.0 <= value <= 1.0 and value == dice(b, a)
    assert (value == 1.0) == bool((a == b).all())


@pytest.mark.parametrize(
    "other,spacing,expected",
    [
        ((3, 1, 1), (0.5, 0.8, 2.0), 1.0),  # two voxels along x at 0.5 mm
        ((1, 2, 2), (0.5, 0.8, 2.0), math.hypot(0.8, 2.0)),
        ((1, 1, 4), (0.5, 0.8, 2.0), 6.0),  # three voxels along z at 2 mm
        ((1, 1, 4), (1.0, 1.0, 1.0), 3.0),  # same voxels, isotropic
    ],
)
def test_hd95_single_voxels(other: tuple[int, ...], spacing: tuple[float, ...], expected: float) -> None:
    a = _mask((5, 5, 6), (1, 1, 1))
    b = _mask((5, 5, 6), other)
    assert hausdorff95(a, b, spacing) == pytest.approx(expected)
    assert hausdorff95(b, a, spacing) == pytest.approx(expected)


def test_hd95_uses_the_95th_percentile() -> None:
    """Thin columns (every voxel is surface): a = z 0..3, b = z 0..5, 2.5 mm slices.

    a -> b: all 0.  b -> a: [0, 0, 0, 0, 2.5, 5.0]; 95th percentile (linear) at rank
    0.95 * 5 = 4.75 -> 2.5 + 0.75 * 2.5 = 4.375 mm (the plain Hausdorff would be 5.0).
    """
    a = np.zeros((3, 3, 8), bool)
    b = np.zeros((3, 3, 8), bool)
    a[1, 1, 0:4] = True
    b[1, 1, 0:6] = True
    assert hausdorff95(a, b, (0.3, 0.3, 2.5)) == pytest.approx(4.375)
    assert hausdorff95(b, a, (0.3, 0.3, 2.5)) == pytest.approx(4.375)


def test_hd95_shifted_cube_anisotropic() -> None:
    """3x3x3 cube shifted by one slice of 2 mm: 9 of 26 surface voxels are 2 mm away -> 2 mm."""
    a = np.zeros((5, 5, 6), bool)
    b = np.zeros((5, 5, 6), bool)
    a[1:4, 1:4, 1:4] = True
    b[1:4, 1:4, 2:5] = True
    assert hausdorff95(a, b, (0.5, 0.5, 2.0)) == pytest.approx(2.0)
    assert hausdorff95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert hausdorff95(a, a, (0.5, 0.5, 2.0)) == 0.0


def test_hd95_empty_masks() -> None:
    empty = np.zeros((4, 4, 4), bool)
    full = _mask((4, 4, 4), (1, 1, 1))
    assert math.isnan(hausdorff95(empty, full, (1, 1, 1)))
    assert math.isnan(hausdorff95(full, empty, (1, 1, 1)))
    assert hausdorff95(empty, empty, (1, 1, 1)) == 0.0
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(full, full, (1, 1))


def test_relative_volume_difference() -> None:
    ref = np.zeros((4, 4, 4), bool)
    ref[0, 0:4, 0] = True  # 4 voxels
    pred = ref.copy()
    pred[1, 0:2, 0] = True  # 6 voxels
    assert relative_volume_difference(pred, ref) == pytest.approx(0.5)
    assert relative_volume_difference(ref, pred) == pytest.approx(-1 / 3)
    assert relative_volume_difference(ref, ref) == 0.0
    empty = np.zeros_like(ref)
    assert relative_volume_difference(empty, empty) == 0.0
    assert math.isnan(relative_volume_difference(pred, empty))
    assert relative_volume_difference(empty, ref) == -1.0


def test_per_slice_dice() -> None:
    a = np.zeros((3, 3, 4), bool)
    b = np.zeros((3, 3, 4), bool)
    # z=0 both empty -> nan; z=1 identical -> 1; z=2: 2 and 1 voxels, 1 shared -> 2/3; z=3 -> 0
    a[0, 0, 1] = b[0, 0, 1] = True
    a[0, 0:2, 2] = True
    b[0, 0, 2] = True
    a[2, 2, 3] = True
    out = per_slice_dice(a, b)
    assert out.shape == (4,) and math.isnan(out[0])
    np.testing.assert_allclose(out[1:], [1.0, 2 / 3, 0.0])


def test_volume_mm3_uses_the_affine_determinant() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[0:2, 0:5, 0] = 1  # 10 voxels
    affine = np.diag([0.5, 0.8, 2.0, 1.0])
    assert volume_mm3(mask, affine) == pytest.approx(10 * 0.8)
    theta = 0.3
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, -1]])
    oblique = np.eye(4)
    oblique[:3, :3] = rot @ np.diag([0.5, 0.8, 2.0])  # rotated, flipped: volume unchanged
    oblique[:3, 3] = [10, -20, 30]
    assert volume_mm3(mask, oblique) == pytest.approx(10 * 0.8)
    with pytest.raises(ValueError, match="4x4"):
        volume_mm3(mask, np.eye(3))
