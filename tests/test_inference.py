"""Sliding-window and per-slice inference, checked against analytic predict functions and Keras."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbo_bids.model.inference import (
    gaussian_importance_map,
    keras_predict_fn,
    predict_slices,
    sliding_window_predict,
    tile_starts,
)

PATCH = (8, 10, 6)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


class Recorder:
    """A pointwise predict function (sigmoid) that records what it is given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32
        self.shapes.append(batch.shape)
        return sigmoid(batch)


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(5, 7, 3), (8, 10, 6), (19, 23, 13), (3, 31, 9)])
@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
@pytest.mark.parametrize("tta", [False, True])
def test_pointwise_predictor_is_reconstructed_exactly(shape: tuple[int, ...], blend: str, tta: bool) -> None:
    volume = _volume(shape)
    fn = Recorder()
    out = sliding_window_predict(fn, volume, PATCH, overlap=0.5, blend=blend, batch_size=3, tta_flips=tta)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, sigmoid(volume), rtol=0, atol=1e-6)
    assert all(s[1:] == (*PATCH, 1) and 1 <= s[0] <= 3 for s in fn.shapes)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 20)] * 3),
    patch=st.tuples(*[st.integers(1, 9)] * 3),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
    batch_size=st.integers(1, 5),
)
def test_reconstruction_any_geometry(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, batch_size: int) -> None:
    volume = _volume(shape, seed=sum(shape))
    out = sliding_window_predict(sigmoid, volume, patch, overlap=overlap, batch_size=batch_size)
    np.testing.assert_allclose(out, sigmoid(volume), rtol=0, atol=1e-6)


def position_ramp(batch: np.ndarray) -> np.ndarray:
    """sigmoid(x) plus (i + k) / P: depends on the x and z position *inside* the patch."""
    _, px, py, pz, _ = batch.shape
    ramp = np.arange(px)[:, None, None] / px + np.arange(pz)[None, None, :] / pz
    return sigmoid(batch) + ramp[None, :, :, :, None].astype(np.float32)


def test_tta_averages_the_x_and_z_flips() -> None:
    """Averaging a ramp i/P with its flip (P-1-i)/P gives (P-1)/(2P) everywhere, per axis."""
    volume = _volume((17, 12, 15))
    patch = (8, 6, 10)
    out = sliding_window_predict(position_ramp, volume, patch, overlap=0.5, tta_flips=True)
    expected = sigmoid(volume) + (patch[0] - 1) / (2 * patch[0]) + (patch[2] - 1) / (2 * patch[2])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    plain = sliding_window_predict(position_ramp, volume, patch, overlap=0.5, tta_flips=False)
    assert np.abs(plain - expected).max() > 0.05  # without flips the ramp does not cancel


def test_tta_sees_flipped_patches() -> None:
    fn = Recorder()
    volume = _volume(PATCH)
    sliding_window_predict(fn, volume, PATCH, tta_flips=True)
    assert len(fn.shapes) == 4  # one tile, four flips (none, x, z, xz)


def test_gaussian_map_shape_and_sigma() -> None:
    weights = gaussian_importance_map((9, 17, 33))
    assert weights.shape == (9, 17, 33) and weights.max() == 1.0 and weights[4, 8, 16] == 1.0
    sigma = 33 / 8
    np.testing.assert_allclose(weights[4, 8, 16 + 2], np.exp(-0.5 * (2 / sigma) ** 2))
    np.testing.assert_array_equal(weights, weights[::-1, ::-1, ::-1])
    assert weights.min() == pytest.approx(1e-3)  # floored: the corners still count a little


@pytest.mark.parametrize(
    "size,patch,overlap",
    [(48, 48, 0.5), (100, 48, 0.5), (49, 48, 0.5), (97, 16, 0.0), (20, 7, 0.9)],
)
def test_tile_starts_cover_and_end_flush(size: int, patch: int, overlap: float) -> None:
    starts = tile_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == size - patch
    steps = np.diff(starts)
    assert (steps >= 1).all() and (steps <= max(1, patch * (1 - overlap))).all()
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()


def test_tile_starts_count() -> None:
    assert tile_starts(100, 48, 0.5) == [0, 17, 35, 52]  # step <= 24: 52 / 3 = 17.3
    assert tile_starts(96, 48, 0.5) == [0, 24, 48]
    assert tile_starts(48, 48, 0.5) == [0]
    with pytest.raises(ValueError):
        tile_starts(10, 12, 0.5)


def test_bad_arguments_are_refused() -> None:
    volume = _volume((9, 9, 9))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(sigmoid, volume, PATCH, overlap=1.0)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_predict(sigmoid, volume, PATCH, blend="max")
    with pytest.raises(ValueError, match="3D"):
        sliding_window_predict(sigmoid, volume[0], PATCH)
    with pytest.raises(ValueError, match="NaN"):
        sliding_window_predict(sigmoid, np.full((9, 9, 9), np.nan, np.float32), PATCH)
    with pytest.raises(ValueError, match="returned"):
        sliding_window_predict(lambda b: b[..., 0], volume, PATCH)


def tiny_conv3d(seed: int = 5) -> keras.Model:
    """Two 3x3x3 convolutions: each output voxel sees a 5^3 neighbourhood (halo 2)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, None, 1))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.Conv3D(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, x)


def clean_voxels(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, halo: int) -> np.ndarray:
    """Voxels that every covering tile sees with their whole receptive field (or the border)."""
    clean = np.ones(shape, bool)
    for axis, (size, p) in enumerate(zip(shape, patch)):
        ok = np.ones(size, bool)
        for s in tile_starts(size, p, overlap):
            idx = np.arange(size)
            inside = (idx >= s) & (idx < s + p)
            lo_ok = (idx - s >= halo) | (s == 0)
            hi_ok = (s + p - 1 - idx >= halo) | (s + p == size)
            ok &= ~inside | (lo_ok & hi_ok)
        clean &= ok.reshape([-1 if a == axis else 1 for a in range(3)])
    return clean


@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
def test_keras_sliding_window_equals_whole_volume_inside(blend: str) -> None:
    model = tiny_conv3d()
    volume = _volume((30, 26, 35), seed=7)
    patch = (16, 16, 16)
    fn = keras_predict_fn(model, 4)
    out = sliding_window_predict(fn, volume, patch, overlap=0.5, blend=blend)
    whole = np.asarray(model(volume[None, ..., None], training=False))[0, ..., 0]
    clean = clean_voxels(volume.shape, patch, 0.5, halo=2)
    assert clean.mean() > 0.3
    np.testing.assert_allclose(out[clean], whole[clean], rtol=0, atol=1e-5)
    assert np.abs(out - whole).max() > 1e-4  # patch borders do differ: the mask is not vacuous


def test_deterministic_bit_identical() -> None:
    model = tiny_conv3d(seed=9)
    volume = _volume((21, 18, 25), seed=3)
    fn = keras_predict_fn(model, 2)
    runs = [sliding_window_predict(fn, volume, (12, 12, 12), batch_size=2, tta_flips=True) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].dtype == np.float32 and runs[0].shape == volume.shape


@pytest.mark.parametrize("n", [1, 3, 4, 9])
def test_keras_predict_fn_pads_batches(n: int) -> None:
    model = tiny_conv3d(seed=1)
    batch = _volume((n, 6, 5, 7, 1), seed=n)
    got = keras_predict_fn(model, batch_size=4)(batch)
    assert got.shape == batch.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(model(batch, training=False)), rtol=0, atol=1e-6)


def test_keras_predict_fn_always_calls_the_same_shape() -> None:
    """Every network call gets ``batch_size`` samples, so the graph is traced once."""
    model = tiny_conv3d(seed=1)
    seen: list[tuple[int | None, ...]] = []

    def spy(x, training: bool = False):
        seen.append(tuple(x.shape))  # runs once per trace under tf.function
        return model(x, training=training)

    fn = keras_predict_fn(spy, batch_size=4)
    for n in (1, 3, 4, 6, 9):
        assert fn(_volume((n, 6, 5, 7, 1), seed=n)).shape == (n, 6, 5, 7, 1)
    assert set(seen) == {(4, 6, 5, 7, 1)}
    if keras.backend.backend() == "tensorflow":
        assert len(seen) == 1  # one trace for five calls of different sizes


def test_predict_slices_pointwise_and_shapes() -> None:
    seen: list[tuple[int, ...]] = []

    def fn(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return sigmoid(batch)

    volume = _volume((21, 30, 70))
    out = predict_slices(fn, volume, batch_size=32)
    assert out.shape == volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, sigmoid(volume), rtol=0, atol=1e-7)
    assert seen == [(32, 32, 32, 1), (32, 32, 32, 1), (6, 32, 32, 1)]


def test_predict_slices_crops_back_the_centre() -> None:
    """A predictor returning each voxel's padded coordinates reveals where the slice was put."""

    def coords(batch: np.ndarray) -> np.ndarray:
        b, px, py, _ = batch.shape
        grid = np.arange(px)[:, None] * 1000 + np.arange(py)[None, :]
        return np.broadcast_to(grid[None, :, :, None], batch.shape).astype(np.float32)

    out = predict_slices(coords, np.zeros((21, 30, 3), np.float32))
    # 21 -> 32 pads (5, 6); 30 -> 32 pads (1, 1)
    expected = (np.arange(21)[:, None] + 5) * 1000 + (np.arange(30)[None, :] + 1)
    for z in range(3):
        np.testing.assert_array_equal(out[:, :, z], expected)


def test_predict_slices_with_keras_2d_model() -> None:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    volume = _volume((32, 16, 5), seed=4)  # already multiples of 16: no padding
    out = predict_slices(keras_predict_fn(model, 4), volume, batch_size=4)
    for z in range(volume.shape[2]):
        ref = np.asarray(model(volume[None, :, :, z, None], training=False))[0, :, :, 0]
        np.testing.assert_allclose(out[:, :, z], ref, rtol=0, atol=1e-6)


def test_every_voxel_gets_the_right_patch_count() -> None:
    """Uniform blending of a constant-per-call predictor averages call ids: check one voxel."""
    calls = itertools.count()

    def constant(batch: np.ndarray) -> np.ndarray:
        value = next(calls)
        return np.full(batch.shape, value, np.float32)

    volume = np.zeros((8, 8, 12), np.float32)
    out = sliding_window_predict(constant, volume, (8, 8, 8), overlap=0.5, blend="uniform", batch_size=1)
    # z tiles start at 0 and 4: z < 4 only in call 0, z >= 8 only in call 1, 4..7 in both
    np.testing.assert_array_equal(out[0, 0, :], [0] * 4 + [0.5] * 4 + [1] * 4)
