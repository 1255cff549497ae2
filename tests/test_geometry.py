"""Tests of lumbo_bids.geometry: reorientation, resampling, crops and the way back to native space."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from conftest import ALL_IMAGES, IMAGE_MASK_PAIRS
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine, from_matvec
from nibabel.orientations import aff2axcodes
from scipy import ndimage

from lumbo_bids.centerline import centerline_from_mask
from lumbo_bids.geometry import (
    RPI,
    CropBox,
    Grid,
    PreprocGeometry,
    bounding_crop,
    crop_around_centerline,
    crop_box_from_centerline,
    load_volume,
    reorient,
    resample_mask_to_grid,
    resample_to_grid,
    resampled_grid,
    to_native,
    uncrop,
    unreorient,
)
from lumbo_bids.preprocess import Preprocessor

SETTINGS = settings(max_examples=60, deadline=None)
PERMUTATIONS = list(itertools.permutations(range(3)))
SIGNS = list(itertools.product((1, -1), repeat=3))


# ----------------------------------------------------------------------- helpers
def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def oriented_affine(perm, signs, zooms, angle, axis, translation) -> np.ndarray:
    """Affine whose voxel axis j points along world axis perm[j] (sign signs[j]), then rotated <= 30 deg."""
    signed_perm = np.zeros((3, 3))
    for j, (p, s) in enumerate(zip(perm, signs)):
        signed_perm[p, j] = s
    return from_matvec(rotation(np.asarray(axis, float), angle) @ signed_perm @ np.diag(zooms), translation)


def expected_axcodes(perm, signs) -> tuple[str, ...]:
    labels = (("L", "R"), ("P", "A"), ("I", "S"))
    return tuple(labels[p][1 if s > 0 else 0] for p, s in zip(perm, signs))


def tilted_cylinder(grid: Grid, radius: float, tilt_x: float, tilt_y: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Boolean cylinder in world space (axis through ``centre``, tilted in degrees)."""
    ijk = np.indices(grid.shape).reshape(3, -1).T
    v = apply_affine(grid.affine, ijk) - np.asarray(centre)
    d = np.array([np.tan(np.radians(tilt_x)), np.tan(np.radians(tilt_y)), 1.0])
    d /= np.linalg.norm(d)
    perp = v - np.outer(v @ d, d)
    return (np.linalg.norm(perp, axis=1) <= radius).reshape(grid.shape)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def reference_resample(data, src_affine, target: Grid, order: int, cval: float) -> np.ndarray:
    """Independent reference: explicit world coordinates + map_coordinates + field-of-view rule."""
    ijk = np.indices(target.shape).reshape(3, -1)
    world = apply_affine(target.affine, ijk.T)
    src = apply_affine(np.linalg.inv(src_affine), world).T
    out = ndimage.map_coordinates(data.astype(np.float64), src, order=order, mode="nearest")
    shape = np.array(data.shape)[:, None]
    inside = np.all((src >= -0.5 - 1e-3) & (src <= shape - 0.5 + 1e-3), axis=0)
    return np.where(inside, out, cval).reshape(target.shape)


orientations = st.tuples(
    st.sampled_from(PERMUTATIONS),
    st.sampled_from(SIGNS),
    st.tuples(*[st.floats(0.3, 8.0)] * 3),
    st.floats(0.0, np.radians(30)),
    st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda a: np.linalg.norm(a) > 0.1),
    st.tuples(*[st.floats(-200, 200)] * 3),
)
shapes = st.tuples(*[st.integers(1, 15)] * 3)


# ------------------------------------------------------------------ orientation
def test_strategy_covers_all_48_orientations():
    codes = {expected_axcodes(p, s) for p in PERMUTATIONS for s in SIGNS}
    assert len(codes) == 48
    for p, s in itertools.product(PERMUTATIONS, SIGNS):
        aff = oriented_affine(p, s, (1.0, 2.0, 3.0), np.radians(25), (1.0, -0.5, 0.3), (0, 0, 0))
        assert aff2axcodes(aff) == expected_axcodes(p, s)
        _, rpi_affine = reorient(np.zeros((2, 3, 4)), aff)
        assert aff2axcodes(rpi_affine) == RPI


@SETTINGS
@given(orientation=orientations, shape=shapes)
def test_reorient_round_trip_is_exact_and_keeps_world_positions(orientation, shape):
    affine = oriented_affine(*orientation)
    assert aff2axcodes(affine) == expected_axcodes(*orientation[:2])
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)

    rpi_data, rpi_affine = reorient(data, affine)
    assert aff2axcodes(rpi_affine) == RPI
    assert rpi_data.dtype == data.dtype
    # every voxel keeps its world position: the value tells which native voxel it was
    rpi_ijk = np.indices(rpi_data.shape).reshape(3, -1).T
    native_ijk = np.array(np.unravel_index(rpi_data.ravel(), shape)).T
    scale = 1.0 + np.abs(affine).max() * max(shape)
    np.testing.assert_allclose(apply_affine(rpi_affine, rpi_ijk), apply_affine(affine, native_ijk), atol=1e-9 * scale)
    back, back_affine = reorient(rpi_data, rpi_affine, aff2axcodes(affine))
    assert np.array_equal(back, data) and back.dtype == data.dtype
    np.testing.assert_allclose(back_affine, affine, atol=1e-9 * scale)
    assert np.array_equal(unreorient(rpi_data, Grid(shape, affine)), data)


@SETTINGS
@given(orientation=orientations, shape=shapes, seed=st.integers(0, 2**16))
def test_resample_onto_same_grid_is_identity(orientation, shape, seed):
    affine = oriented_affine(*orientation)
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    out = resample_to_grid(data, affine, Grid(shape, affine), order=1)
    assert np.array_equal(out, data)  # an integer (here zero) shift is an exact copy


@SETTINGS
@given(orientation=orientations, shape=shapes, seed=st.integers(0, 2**16))
def test_resample_onto_reoriented_grid_equals_reorient(orientation, shape, seed):
    """A permuted/flipped target grid exercises the full (non-diagonal) matrix path."""
    affine = oriented_affine(*orientation)
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    rpi_data, rpi_affine = reorient(data, affine)
    out = resample_to_grid(data, affine, Grid(rpi_data.shape, rpi_affine), order=1, max_slab_voxels=7)
    np.testing.assert_allclose(out, rpi_data, atol=1e-5)


def test_reorient_rejects_singular_affine():
    with pytest.raises(ValueError, match="singular"):
        reorient(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


# ------------------------------------------------------------------- resampling
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("oblique", [False, True])
def test_resample_matches_reference_and_does_not_depend_on_slabs(order, oblique):
    rng = np.random.default_rng(order)
    data = ndimage.gaussian_filter(rng.normal(size=(17, 13, 11)), 1.0).astype(np.float32)
    src = from_matvec(np.diag([0.9, 1.1, 2.5]), [3.0, -2.0, 1.0])
    rot = rotation(np.array([0.3, 1.0, 0.2]), np.radians(20)) if oblique else np.eye(3)
    target = Grid((19, 15, 23), from_matvec(rot @ np.diag([0.7, 0.8, 1.3]), [2.0, -3.0, -1.0]))
    one_slice = resample_to_grid(data, src, target, order=order, cval=-7.0, max_slab_voxels=1)
    whole = resample_to_grid(data, src, target, order=order, cval=-7.0, max_slab_voxels=10**9)
    expected = reference_resample(data, src, target, order, cval=-7.0)
    assert one_slice.dtype == np.float32 and one_slice.shape == target.shape
    assert (one_slice == -7.0).any() and (one_slice != -7.0).mean() > 0.3  # both regimes present
    tol = 1e-5 if order <= 1 else 2e-4  # order 3: float32 spline coefficients
    np.testing.assert_allclose(one_slice, expected, atol=tol)
    np.testing.assert_allclose(whole, one_slice, atol=tol)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_integer_shift_is_an_exact_copy_matching_interpolation(order):
    data = np.random.default_rng(5).normal(size=(9, 8, 7)).astype(np.float32)
    src = from_matvec(np.diag([0.5, 0.5, 0.5]), [1.0, 2.0, 3.0])
    target = Grid((12, 5, 9), src @ from_matvec(np.eye(3), [-2, 4, 1]))  # partly outside the source
    out = resample_to_grid(data, src, target, order=order, cval=-3.0, max_slab_voxels=100)
    tol = 1e-6 if order <= 1 else 2e-4
    np.testing.assert_allclose(out, reference_resample(data, src, target, order, cval=-3.0), atol=tol)
    np.testing.assert_allclose(out[2:11, :4, :6], data[:9, 4:8, 1:7], atol=tol)
    assert np.all(out[:2] == -3.0)


def test_field_of_view_rule_half_voxel_edge_then_cval():
    data = np.arange(1.0, 5.0, dtype=np.float32).reshape(4, 1, 1)
    src = np.eye(4)
    target = Grid((8, 1, 1), from_matvec(np.diag([0.5, 1.0, 1.0]), [-1.25, 0.0, 0.0]))
    out = resample_to_grid(data, src, target, order=1, cval=-1.0)[:, 0, 0]
    # source x = -1.25, -0.75 (outside), -0.25 (edge), 0.25, 0.75, 1.25, 1.75, 2.25
    np.testing.assert_allclose(out, [-1, -1, 1, 1.25, 1.75, 2.25, 2.75, 3.25])


def test_resampled_grid_keeps_orientation_centre_voxel_and_field_of_view():
    affine = oriented_affine((1, 2, 0), (1, -1, 1), (1.0, 1.0, 7.5), np.radians(10), (1, 1, 0), (5, -8, 30))
    grid = Grid((49, 54, 9), affine)
    new = resampled_grid(grid, 0.5)
    assert new.shape == (98, 108, 135)
    np.testing.assert_allclose(new.zooms, 0.5)
    assert aff2axcodes(new.affine) == aff2axcodes(affine)
    centre = (np.array(grid.shape) - 1) // 2
    new_centre = (np.array(new.shape) - 1) // 2
    np.testing.assert_allclose(apply_affine(new.affine, new_centre), apply_affine(affine, centre), atol=1e-9)
    # integer zoom ratios: every native voxel centre is a voxel centre of the new grid
    native_in_new = apply_affine(np.linalg.inv(new.affine) @ affine, np.indices(grid.shape).reshape(3, -1).T)
    np.testing.assert_allclose(native_in_new, np.rint(native_in_new), atol=1e-6)
    assert resampled_grid(Grid((3, 3, 1), np.eye(4)), 4.0).shape == (1, 1, 1)
    with pytest.raises(ValueError):
        resampled_grid(grid, 0.0)


def test_mask_rule_beats_nearest_on_a_thin_tilted_cylinder():
    """Why masks use linear + 0.5: nearest neighbour makes staircases on anisotropic data."""
    native = Grid((24, 24, 20), from_matvec(np.diag([1.0, 1.0, 3.0]), [-11.5, -11.5, -28.5]))
    truth_native = tilted_cylinder(native, 1.5, 15, 10, centre=(0.3, -0.2, 0))
    target = resampled_grid(native, 0.5)
    truth = tilted_cylinder(target, 1.5, 15, 10, centre=(0.3, -0.2, 0))
    linear = resample_mask_to_grid(truth_native, native.affine, target)
    nearest = resample_to_grid(truth_native.astype(np.float32), native.affine, target, order=0) >= 0.5
    assert linear.dtype == np.uint8 and set(np.unique(linear)) <= {0, 1}

    def centre_error(mask):
        zs = [z for z in range(target.shape[2]) if mask[:, :, z].any() and truth[:, :, z].any()]
        com = np.array([ndimage.center_of_mass(mask[:, :, z]) for z in zs])
        ref = np.array([ndimage.center_of_mass(truth[:, :, z]) for z in zs])
        return np.linalg.norm(com - ref, axis=1).mean()

    assert dice(linear, truth) > dice(nearest, truth) + 0.05
    assert centre_error(linear) < 0.6 * centre_error(nearest)


def test_resampling_memory_stays_near_output_size():
    data = np.random.default_rng(0).random((256, 256, 400), dtype=np.float32)
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    target = Grid(data.shape, affine @ from_matvec(np.eye(3), [0.3, 0.2, 0.1]))  # sub-voxel shift
    tracemalloc.start()
    try:
        out = resample_to_grid(data, affine, target, order=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * out.nbytes
    np.testing.assert_allclose(out[10, 10, 10], data[10:12, 10:12, 10:12].mean(), atol=0.5)


# ------------------------------------------------------------------------ loading
def test_load_volume_scaling_nan_and_4d():
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, 10.0)
    on_disk = nib.Nifti1Image.from_bytes(img.to_bytes())
    data = load_volume(on_disk)
    assert data.dtype == np.float32 and np.array_equal(data, raw * 2.0 + 10.0)

    values = np.ones((2, 3, 4, 1), dtype=np.float32)
    values[0, 0, 0, 0], values[1, 1, 1, 0] = np.nan, -np.inf
    img = nib.Nifti1Image(values, np.eye(4))
    data = load_volume(img)
    assert data.shape == (2, 3, 4) and data[0, 0, 0] == 0 and data[1, 1, 1] == 0 and data.sum() == 22
    assert np.isnan(img.dataobj[0, 0, 0, 0])  # the image itself is left untouched

    with pytest.raises(ValueError, match="4D image with 3 volumes"):
        load_volume(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)))


# --------------------------------------------------------------------------- crops
def random_box(rng, grid: Grid, size=(8, 6)) -> CropBox:
    nx, ny, nz = grid.shape
    centers = np.column_stack([rng.integers(0, nx, nz), rng.integers(0, ny, nz)])
    return CropBox(centers, size, grid)


def test_crop_uncrop_exact_inverse_and_zero_padding():
    rng = np.random.default_rng(1)
    grid = Grid((20, 15, 30), np.eye(4))
    data = rng.normal(size=grid.shape).astype(np.float32) + 5.0
    box = random_box(rng, grid)
    stack = crop_around_centerline(data, box)
    assert stack.shape == (8, 6, 30) and stack.dtype == np.float32
    for z, (cx, cy) in enumerate(box.centers):
        for i, j in itertools.product(range(8), range(6)):
            x, y = cx - 4 + i, cy - 3 + j
            inside = 0 <= x < 20 and 0 <= y < 15
            assert stack[i, j, z] == (data[x, y, z] if inside else 0.0)
    back = uncrop(stack, box, fill=np.nan)
    covered = ~np.isnan(back)
    assert np.array_equal(back[covered], data[covered])
    assert np.array_equal(crop_around_centerline(np.where(covered, back, 0.0), box), stack)
    # a box fully inside the image: exact inverse on the box, and cropping again is identical
    inner = CropBox(np.tile([10, 7], (30, 1)), (8, 6), grid)
    full = uncrop(crop_around_centerline(data, inner), inner)
    assert np.array_equal(full[6:14, 4:10], data[6:14, 4:10]) and full[:6].sum() == 0


def test_crop_keeps_cord_centred():
    grid = Grid((80, 80, 120), from_matvec(np.eye(3) * 0.5, [-20.0, -20.0, -30.0]))
    cord = tilted_cylinder(grid, 3.0, 15, 10, centre=(1.0, -2.0, 0.0))
    box = crop_box_from_centerline(centerline_from_mask(cord), grid, (32, 32))
    stack = crop_around_centerline(cord.astype(np.uint8), box)
    assert stack.sum() == cord.sum()  # nothing of the cord is cut
    for z in range(grid.shape[2]):
        com = ndimage.center_of_mass(stack[:, :, z])
        assert np.all(np.abs(np.subtract(com, (16, 16))) <= 1.0), (z, com)


def test_crop_box_from_centerline_rounds_and_clips():
    grid = Grid((10, 10, 3), np.eye(4))
    box = crop_box_from_centerline(np.array([[2.4, 2.6], [-3.0, 4.5], [12.0, 9.49]]), grid, (4, 4))
    assert box.centers.tolist() == [[2, 3], [0, 4], [9, 9]]
    with pytest.raises(ValueError):
        crop_box_from_centerline(np.zeros((2, 2)), grid)


def test_bounding_crop_is_a_valid_world_space_image():
    rng = np.random.default_rng(2)
    grid = Grid((30, 25, 12), oriented_affine((0, 1, 2), (1, 1, 1), (0.5, 0.5, 0.5), 0.2, (0, 0, 1), (4, 5, 6)))
    box = CropBox(np.column_stack([rng.integers(8, 20, 12), rng.integers(5, 18, 12)]), (10, 8), grid)
    slices, sub = bounding_crop(box)
    data = rng.normal(size=grid.shape)
    assert data[slices].shape == sub.shape
    ijk = np.indices(sub.shape).reshape(3, -1).T
    offset = np.array([slices[0].start, slices[1].start, 0])
    np.testing.assert_allclose(apply_affine(sub.affine, ijk), apply_affine(grid.affine, ijk + offset), atol=1e-9)
    inside_boxes = uncrop(np.ones(box.shape), box) > 0
    assert inside_boxes[slices].sum() == inside_boxes.sum()  # every box voxel is in the bounding box
    edge = CropBox(np.tile([0, 24], (12, 1)), (10, 8), grid)  # boxes leave the image
    e_slices, e_grid = bounding_crop(edge)
    assert e_slices[:2] == (slice(0, 5), slice(20, 25)) and e_grid.shape == (5, 5, 12)


# ----------------------------------------------------------- serialisation, native
@SETTINGS
@given(orientation=orientations, shape=shapes, seed=st.integers(0, 2**16))
def test_dict_round_trips_are_exact(orientation, shape, seed):
    affine = oriented_affine(*orientation)
    native = Grid(shape, affine)
    rpi_data, rpi_affine = reorient(np.zeros(shape), affine)
    rpi = Grid(rpi_data.shape, rpi_affine)
    resampled = resampled_grid(rpi, 0.5)
    box = random_box(np.random.default_rng(seed), resampled, (5, 7))
    for obj in (native, box, PreprocGeometry(native, rpi, resampled, box), PreprocGeometry(native, rpi, resampled)):
        again = type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))
        assert again == obj
    assert Grid.from_dict(json.loads(json.dumps(native.to_dict()))).affine.tobytes() == native.affine.tobytes()


def test_preproc_geometry_rejects_inconsistent_grids():
    native = Grid((4, 5, 6), np.eye(4))
    with pytest.raises(ValueError):
        PreprocGeometry(native, Grid((5, 4, 6), np.eye(4)), native)
    other = Grid((4, 5, 6), from_matvec(np.eye(3), [1, 0, 0]))
    with pytest.raises(ValueError, match="crop"):
        PreprocGeometry(native, native, native, CropBox(np.zeros((6, 2)), (2, 2), other))


def test_to_native_with_box_leaving_the_image_and_without_crop():
    affine = oriented_affine((2, 0, 1), (-1, 1, 1), (1.0, 1.0, 2.0), 0.0, (0, 0, 1), (0, 0, 0))
    data = np.random.default_rng(3).random((6, 20, 20)).astype(np.float32) + 1.0
    resampled, _, geom = Preprocessor(resolution=1.0).resample(data, affine)
    back = to_native(resampled, geom)
    assert back.shape == data.shape and back.dtype == np.float32 and back.flags.c_contiguous
    np.testing.assert_allclose(back, data, atol=1e-5)
    # a box hanging off the image: what it covers comes back, the rest is 0
    nz = geom.resampled.shape[2]
    box = CropBox(np.tile([0, 0], (nz, 1)), (8, 8), geom.resampled)
    cropped_geom = PreprocGeometry(geom.native, geom.rpi, geom.resampled, box)
    stack = crop_around_centerline(resampled, box)
    back = to_native(stack, cropped_geom)
    expected = to_native(uncrop(stack, box), geom)
    np.testing.assert_allclose(back, expected, atol=1e-6)
    # integer zoom ratio: native voxels lie on the grid, so each one is either recovered or 0
    assert np.all(np.isclose(back, data, atol=1e-5) | (back == 0))
    assert 0 < (back > 0).mean() < 0.5
    mask = to_native(stack, cropped_geom, threshold=0.5)
    assert mask.dtype == np.uint8 and np.array_equal(mask, (expected >= 0.5).astype(np.uint8))
    with pytest.raises(ValueError):
        to_native(resampled, cropped_geom)


# ------------------------------------------------------------------------ real data
@pytest.mark.parametrize("image_path, mask_path", IMAGE_MASK_PAIRS, ids=lambda p: p.name)
def test_mask_round_trip_through_crop_is_faithful(image_path, mask_path):
    img = nib.load(mask_path)
    mask = load_volume(img)
    native = Grid(mask.shape, img.affine)
    rpi_data, rpi_affine = reorient(mask, img.affine)
    rpi = Grid(rpi_data.shape, rpi_affine)
    target = resampled_grid(rpi, 0.5)
    resampled = resample_mask_to_grid(rpi_data, rpi_affine, target)
    box = crop_box_from_centerline(centerline_from_mask(resampled), target, (64, 64))
    geom = PreprocGeometry(native, rpi, target, box)
    geom = PreprocGeometry.from_dict(json.loads(json.dumps(geom.to_dict())))
    back = to_native(crop_around_centerline(resampled, box), geom, threshold=0.5)
    assert back.shape == img.shape[:3] and back.dtype == np.uint8
    assert np.array_equal(geom.native.affine, img.affine)
    assert dice(back, mask > 0.5) >= 0.95


@pytest.mark.parametrize("image_path", ALL_IMAGES, ids=lambda p: p.name)
def test_image_reorientation_inverse_is_exact_and_resampling_is_lossless(image_path):
    img = nib.load(image_path)
    data = load_volume(img)
    rpi_data, rpi_affine = reorient(data, img.affine)
    assert aff2axcodes(rpi_affine) == RPI
    assert np.array_equal(unreorient(rpi_data, Grid(data.shape, img.affine)), data)
    resampled, _, geom = Preprocessor(resolution=0.5).resample(data, img.affine)
    np.testing.assert_allclose(geom.resampled.zooms, 0.5, atol=1e-6)
    back = to_native(resampled, geom)
    assert back.shape == data.shape and np.array_equal(geom.native.affine, img.affine)
    # integer zoom ratios: native voxel centres lie on the 0.5 mm grid -> near lossless
    np.testing.assert_allclose(back, data, atol=1e-5 * np.abs(data).max())
