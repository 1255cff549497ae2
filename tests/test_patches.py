"""Patch sampling and extraction (lumbo_bids.training.patches)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbo_bids.training import patches
from lumbo_bids.training.patches import (
    cord_slices,
    extract_patch,
    extract_patch_2d,
    gaussian_heatmap_2d,
    mask_centerline,
    sample_patch_centres,
    sample_window_centre_2d,
)


def _reference_patch(volume: np.ndarray, centre, size, cval) -> np.ndarray:
    """Pad the whole volume generously, then slice: obviously right, slow."""
    pad = max(size) + max(abs(int(c)) for c in centre) + max(volume.shape)
    padded = np.pad(volume, pad, constant_values=cval)
    start = [int(c) - s // 2 + pad for c, s in zip(centre, size)]
    return padded[tuple(slice(a, a + s) for a, s in zip(start, size))]


def test_interior_patch_is_the_slice():
    vol = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    out = extract_patch(vol, (5, 6, 7), (4, 5, 6))
    np.testing.assert_array_equal(out, vol[3:7, 4:9, 4:10])
    out[...] = -1  # a copy, not a view
    assert vol.min() >= 0


def test_border_patch_is_padded_with_cval():
    vol = np.arange(1, 6 * 6 * 6 + 1, dtype=np.int32).reshape(6, 6, 6)
    out = extract_patch(vol, (0, 0, 5), (4, 4, 4), cval=-7)
    # covers x, y in [-2, 2) and z in [3, 7): only x, y in {0, 1} and z in {3, 4, 5} are inside
    np.testing.assert_array_equal(out[2:, 2:, :3], vol[:2, :2, 3:6])
    inside = np.zeros(out.shape, bool)
    inside[2:, 2:, :3] = True
    assert np.all(out[~inside] == -7)
    assert out.dtype == vol.dtype


def test_patch_entirely_outside_is_all_cval():
    vol = np.ones((5, 5, 5), np.float32)
    assert np.all(extract_patch(vol, (40, 2, 2), (4, 4, 4), cval=3.0) == 3.0)


def test_patch_from_memmap_reads_into_a_plain_array(tmp_path):
    vol = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    out = extract_patch(mm, (8, 0, 3), (5, 5, 5))
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, _reference_patch(vol, (8, 0, 3), (5, 5, 5), 0))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 9)] * 3),
    centre=st.tuples(*[st.integers(-6, 14)] * 3),
    size=st.tuples(*[st.integers(1, 7)] * 3),
)
def test_extract_patch_matches_padding_reference(shape, centre, size):
    vol = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) + 1
    np.testing.assert_array_equal(extract_patch(vol, centre, size, cval=-1), _reference_patch(vol, centre, size, -1))


def test_extract_patch_2d_and_shape_errors():
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    out = extract_patch_2d(img, (0, 29), (6, 6))
    np.testing.assert_array_equal(out, _reference_patch(img, (0, 29), (6, 6), 0))
    with pytest.raises(ValueError):
        extract_patch_2d(np.zeros((4, 4, 4)), (1, 1), (2, 2))
    with pytest.raises(ValueError):
        extract_patch(img, (1, 1), (2, 2, 2))


def _tube_mask(shape=(32, 32, 40), radius=2) -> np.ndarray:
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        mask[:, :, z] = (xx - 16) ** 2 + (yy - 14 - z // 10) ** 2 <= radius**2
    return mask


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.75, 1.0])
def test_cord_fraction_is_honoured(fraction):
    mask = _tube_mask(radius=1)  # 5 voxels a slice: uniform centres almost never land on it
    n = 200
    centres = sample_patch_centres(mask, n, (16, 16, 16), fraction, np.random.default_rng(3))
    assert centres.shape == (n, 3) and centres.dtype == np.int64
    on_cord = mask[tuple(centres.T)] != 0
    n_cord = round(n * fraction)
    assert on_cord[:n_cord].all()
    assert on_cord.mean() == pytest.approx(fraction, abs=0.05)


def test_uniform_centres_keep_the_patch_inside_when_it_fits():
    mask = _tube_mask()
    centres = sample_patch_centres(mask, 500, (16, 16, 48), 0.0, np.random.default_rng(1))
    start = centres - np.array([8, 8, 24])
    assert np.all(start[:, :2] >= 0) and np.all(start[:, :2] + 16 <= 32)
    assert np.all((centres[:, 2] >= 0) & (centres[:, 2] < 40))  # z: patch taller than the volume
    assert len(np.unique(centres[:, 0])) > 10  # spread, not a constant


def test_cord_centres_are_spread_along_the_cord_not_by_cross_section():
    mask = np.zeros((32, 32, 40), np.uint8)
    mask[6:26, 6:26, :20] = 1  # 400 voxels a slice in the lower half
    mask[15:17, 15:17, 20:] = 1  # 4 voxels a slice in the upper half
    centres = sample_patch_centres(mask, 1000, (8, 8, 8), 1.0, np.random.default_rng(0))
    upper = np.mean(centres[:, 2] >= 20)
    assert upper == pytest.approx(0.5, abs=0.06)  # by voxels it would be 1 %


def test_sampling_is_reproducible_and_handles_no_cord():
    mask = _tube_mask()
    a = sample_patch_centres(mask, 50, (16, 16, 16), 0.5, np.random.default_rng(7))
    b = sample_patch_centres(mask, 50, (16, 16, 16), 0.5, np.random.default_rng(7))
    c = sample_patch_centres(mask, 50, (16, 16, 16), 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    empty = sample_patch_centres(np.zeros((10, 10, 10), np.uint8), 5, (4, 4, 4), 1.0, np.random.default_rng(0))
    assert empty.shape == (5, 3) and np.all((empty >= 0) & (empty < 10))
    with pytest.raises(ValueError):
        sample_patch_centres(mask, 5, (4, 4, 4), 1.5, np.random.default_rng(0))


def test_end_centres_surround_an_end_inside_the_volume_only():
    mask = np.zeros((32, 32, 80), np.uint8)
    mask[14:18, 12:16, 30:] = 1  # a cord from slice 30 up, leaving the volume at the top
    assert patches.cord_ends(patches.cord_slices(mask)[0], 80) == [30]
    centres = sample_patch_centres(mask, 400, (16, 16, 16), 1.0, np.random.default_rng(0), end_fraction=0.5)
    end, rest = centres[:200], centres[200:]
    assert np.all(np.abs(end[:, 2] - 30) <= 8)  # within half a patch of the end, below it too
    assert np.mean(end[:, 2] < 30) == pytest.approx(0.5, abs=0.1)
    np.testing.assert_array_equal(np.unique(end[:, :2], axis=0), [[16, 14]])  # the end slice's centre
    assert np.all(mask[tuple(rest.T)] != 0) and np.mean(rest[:, 2] > 60) > 0.3  # the others along the cord
    # without an end inside the volume (cut at both sides), the same centres as end_fraction 0
    whole = np.zeros((32, 32, 80), np.uint8)
    whole[14:18, 12:16, :] = 1
    assert patches.cord_ends(patches.cord_slices(whole)[0], 80) == []
    a = sample_patch_centres(whole, 50, (16, 16, 16), 0.8, np.random.default_rng(5), end_fraction=0.5)
    b = sample_patch_centres(whole, 50, (16, 16, 16), 0.8, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="end_fraction"):
        sample_patch_centres(mask, 5, (4, 4, 4), 0.5, np.random.default_rng(0), end_fraction=2.0)


def test_cord_slices_and_centerline_scan_in_chunks(monkeypatch):
    monkeypatch.setattr(patches, "SCAN_CHUNK", 7)  # several chunks, the last one partial
    mask = np.zeros((20, 18, 40), np.uint8)
    mask[4:7, 10:12, 5:33] = 1  # centre (5, 10.5)
    mask[15, 2, 38] = 1
    z, counts = cord_slices(mask)
    np.testing.assert_array_equal(z, [*range(5, 33), 38])
    np.testing.assert_array_equal(counts, [6] * 28 + [1])
    line = mask_centerline(mask)
    assert line.shape == (40, 2)
    np.testing.assert_allclose(line[5:33], np.tile([5.0, 10.5], (28, 1)))
    np.testing.assert_allclose(line[38], [15.0, 2.0])
    assert np.isnan(line[:5]).all() and np.isnan(line[33:38]).all()


def test_localiser_window_contains_the_cord_with_the_given_probability():
    rng = np.random.default_rng(0)
    shape, size, point = (200, 200), (48, 48), (150.0, 60.0)

    def contains(c) -> bool:
        start = c - np.array(size) // 2
        return bool(np.all((np.array(point) >= start + 4) & (np.array(point) <= start + np.array(size) - 5)))

    always = [sample_window_centre_2d(shape, size, point, 1.0, rng) for _ in range(300)]
    assert all(contains(c) for c in always)
    assert len({tuple(c) for c in always}) > 50  # the cord is not always at the same place
    never = [sample_window_centre_2d(shape, size, point, 0.0, rng) for _ in range(300)]
    assert np.mean([contains(c) for c in never]) < 0.2  # only by chance
    half = [contains(sample_window_centre_2d(shape, size, point, 0.5, rng)) for _ in range(600)]
    assert np.mean(half) == pytest.approx(0.5 + 0.5 * 0.04, abs=0.07)
    nan = sample_window_centre_2d(shape, size, (np.nan, np.nan), 1.0, rng)
    assert np.all((nan >= 0) & (nan < 200))


def test_gaussian_heatmap():
    heat = gaussian_heatmap_2d((20, 30), (5.0, 12.0), sigma=2.0)
    assert heat.dtype == np.float32 and heat.shape == (20, 30)
    assert heat[5, 12] == pytest.approx(1.0)
    assert heat[7, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)
    assert np.unravel_index(heat.argmax(), heat.shape) == (5, 12)
    assert not gaussian_heatmap_2d((8, 8), None, 2.0).any()
    assert not gaussian_heatmap_2d((8, 8), (np.nan, np.nan), 2.0).any()
