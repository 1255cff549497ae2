"""Tests of lumbo_bids.intensity: Nyúl standardisation, percentile fallback, z-scoring."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import ALL_IMAGES
from hypothesis import given, settings
from hypothesis import strategies as st

from lumbo_bids.geometry import load_volume
from lumbo_bids.intensity import (
    DEFAULT_PERCENTILES,
    apply_standard_scale,
    image_landmarks,
    learn_standard_scale,
    percentile_scale,
    standardise,
    zscore,
)

SETTINGS = settings(max_examples=50, deadline=None)


def synthetic_stack(seed: int, kind: str = "gamma", pad: int = 6) -> np.ndarray:
    """A cropped-stack-like image: positive tissue intensities framed by zero padding."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 10)
    if kind == "gamma":
        tissue = rng.gamma(2.0 + seed % 3, 50.0 * (1 + seed % 4), shape)
    elif kind == "lognormal":
        tissue = rng.lognormal(5.0, 0.4, shape)
    else:  # two tissues
        tissue = np.where(rng.random(shape) < 0.3, rng.normal(300, 20, shape), rng.normal(900, 60, shape))
    tissue = np.maximum(tissue, 1.0)
    out = np.zeros((shape[0] + 2 * pad, shape[1], shape[2]))
    out[pad : pad + shape[0]] = tissue
    return out.astype(np.float32)


def training_standard() -> np.ndarray:
    stacks = [synthetic_stack(s, k) for s, k in [(0, "gamma"), (1, "lognormal"), (2, "bimodal"), (3, "gamma")]]
    return learn_standard_scale([image_landmarks(s) for s in stacks])


def test_landmarks_ignore_zero_padding_or_follow_the_mask():
    stack = synthetic_stack(0)
    tissue = stack[6:30]
    np.testing.assert_allclose(image_landmarks(stack), np.percentile(tissue, DEFAULT_PERCENTILES))
    mask = np.zeros(stack.shape, bool)
    mask[10:20] = True
    np.testing.assert_allclose(image_landmarks(stack, mask), np.percentile(stack[10:20], DEFAULT_PERCENTILES))
    with pytest.raises(ValueError, match="foreground"):
        image_landmarks(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError):
        image_landmarks(stack, percentiles=(50, 10))


def test_learn_standard_scale_maps_each_image_onto_the_scale_and_averages():
    a = np.array([10.0, 20.0, 40.0, 110.0])  # on the scale: 0, 10, 30, 100
    b = np.array([0.0, 50.0, 60.0, 100.0])  # 0, 50, 60, 100
    c = np.array([5.0, 6.0, 7.0, 15.0])  # 0, 10, 20, 100
    standard = learn_standard_scale([a, b, c], scale=(0.0, 100.0))
    np.testing.assert_allclose(standard, [0.0, (10 + 50 + 10) / 3, (30 + 60 + 20) / 3, 100.0])
    # a linear change of intensities of one training image changes nothing
    np.testing.assert_allclose(learn_standard_scale([3 * a + 7, b, c]), standard)
    np.testing.assert_allclose(learn_standard_scale([a], scale=(1.0, 2.0)), [1.0, 1.1, 1.3, 2.0])
    with pytest.raises(ValueError, match="constant"):
        learn_standard_scale([np.full(4, 5.0)])


@pytest.mark.parametrize("seed, kind", [(4, "gamma"), (5, "lognormal"), (6, "bimodal")])
def test_standardised_image_has_the_standard_landmarks(seed, kind):
    standard = training_standard()
    stack = synthetic_stack(seed, kind)
    out = apply_standard_scale(stack, standard)
    assert out.dtype == np.float32 and out.shape == stack.shape
    np.testing.assert_allclose(image_landmarks(out, mask=stack > 0), standard, atol=0.5)  # scale is 0..100
    assert not np.allclose(image_landmarks(stack), standard, atol=5)  # it was not already standard


def test_nyul_is_invariant_to_linear_intensity_changes():
    standard = training_standard()
    stack = synthetic_stack(8)
    fg = stack > 0
    reference = apply_standard_scale(stack, standard, mask=fg)
    for scale, shift in [(0.01, 0.0), (7.0, 300.0)]:
        changed = apply_standard_scale(stack * scale + shift, standard, mask=fg)
        np.testing.assert_allclose(changed[fg], reference[fg], atol=1e-3)


@SETTINGS
@given(seed=st.integers(0, 2**16), levels=st.sampled_from([None, 3, 12]))
def test_nyul_map_is_monotone_and_extrapolates_along_the_end_segments(seed, levels):
    rng = np.random.default_rng(seed)
    data = rng.gamma(2.0, 100.0, 500)
    if levels is not None:  # flat histograms: tied landmarks
        data = np.round(data / data.max() * levels) + 1
    mask = rng.random(500) < 0.8
    data[~mask] *= rng.choice([0.01, 3.0], (~mask).sum())  # values beyond the landmarks
    standard = training_standard()
    out = apply_standard_scale(data, standard, mask=mask)
    order = np.argsort(data, kind="stable")
    assert np.all(np.isfinite(out)) and np.all(np.diff(out[order].astype(np.float64)) >= -1e-4)
    marks = image_landmarks(data, mask)
    if levels is None:  # no ties: explicit linear extrapolation with the first / last segment
        low, high = data.min(), data.max()
        slope_low = (standard[1] - standard[0]) / (marks[1] - marks[0])
        slope_high = (standard[-1] - standard[-2]) / (marks[-1] - marks[-2])
        expected_low = standard[0] + slope_low * (low - marks[0])
        expected_high = standard[-1] + slope_high * (high - marks[-1])
        np.testing.assert_allclose(out[data == low], expected_low, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(out[data == high], expected_high, rtol=1e-5, atol=1e-3)


def test_percentile_fallback_maps_p1_p99_to_0_1():
    stack = synthetic_stack(9)
    out = percentile_scale(stack)
    p1, p99 = np.percentile(out[stack > 0], [1, 99])
    assert p1 == pytest.approx(0.0, abs=1e-5) and p99 == pytest.approx(1.0, abs=1e-5)
    assert out.dtype == np.float32
    constant = percentile_scale(np.full((3, 3, 3), 5.0))
    assert np.all(constant == 0.0)


def test_zscore_mean_zero_std_one_over_the_mask():
    rng = np.random.default_rng(10)
    data = rng.normal(40.0, 9.0, (20, 20, 20))
    out = zscore(data)
    assert out.mean() == pytest.approx(0.0, abs=1e-5) and out.std() == pytest.approx(1.0, abs=1e-5)
    mask = np.zeros(data.shape, bool)
    mask[:5] = True
    data[5:] = 1000.0
    out = zscore(data, mask)
    assert out[mask].mean() == pytest.approx(0.0, abs=1e-5) and out[mask].std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(zscore(np.full((2, 2, 2), 3.0)) == 0.0)


@pytest.mark.parametrize("use_nyul", [True, False])
def test_standardise_is_what_the_network_sees(use_nyul):
    standard = training_standard()
    landmarks = {"method": "nyul", "percentiles": list(DEFAULT_PERCENTILES), "standard": standard.tolist()}
    landmarks = landmarks if use_nyul else None
    stack = synthetic_stack(11, "lognormal", pad=6)
    fg = stack > 0
    out = standardise(stack, landmarks)
    assert out.dtype == np.float32
    assert out[fg].mean() == pytest.approx(0.0, abs=1e-4) and out[fg].std() == pytest.approx(1.0, abs=1e-4)
    # zero padding of the crop does not change the foreground values
    less_padding = standardise(synthetic_stack(11, "lognormal", pad=1), landmarks)
    np.testing.assert_allclose(less_padding[1:25], out[6:30], atol=1e-4)
    # neither does a linear change of scanner intensities
    np.testing.assert_allclose(standardise(stack * 3.5, landmarks)[fg], out[fg], atol=1e-3)


def test_standardise_uses_the_landmarks_and_validates_them():
    standard = training_standard()
    stack = synthetic_stack(12, "bimodal")
    nyul = standardise(stack, {"percentiles": list(DEFAULT_PERCENTILES), "standard": standard.tolist()})
    fallback = standardise(stack, None)
    assert np.abs(nyul - fallback)[stack > 0].max() > 0.1
    with pytest.raises(ValueError, match="standard"):
        standardise(stack, {"percentiles": [1, 99]})
    with pytest.raises(ValueError):
        standardise(stack, {"percentiles": [1, 50, 99], "standard": [0, 100]})
    with pytest.raises(ValueError, match="foreground"):
        standardise(np.zeros((4, 4, 4)), None)


def test_real_images_reach_the_standard_scale():
    volumes = [load_volume(nib.load(p)) for p in ALL_IMAGES]
    standard = learn_standard_scale([image_landmarks(v) for v in volumes])
    for volume in volumes:
        out = apply_standard_scale(volume, standard)
        np.testing.assert_allclose(image_landmarks(out, mask=volume > 0), standard, atol=0.5)
