"""Random augmentation of image/mask pairs (lumbo_bids.training.augment)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from lumbo_bids.training.augment import AugmentConfig, augment_pair

EVERYTHING = AugmentConfig(p_flip=1.0, p_spatial=1.0, p_elastic=1.0, p_intensity=1.0, p_gamma=1.0, p_noise=1.0)


def _tube(shape=(24, 24, 16), centre=(12.0, 11.0), radius=5.0) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    disk = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    mask = np.repeat(disk[:, :, None], shape[2], axis=2).astype(np.uint8) if len(shape) == 3 else disk.astype(np.uint8)
    image = (mask * 2.0 + np.random.default_rng(0).normal(0, 0.3, mask.shape)).astype(np.float32)
    return image, mask


@pytest.mark.parametrize("shape", [(24, 24, 16), (32, 28)])
def test_same_seed_same_result_other_seed_other_result(shape):
    image, mask = _tube(shape)
    a = augment_pair(image, mask, np.random.default_rng(5), EVERYTHING)
    b = augment_pair(image, mask, np.random.default_rng(5), EVERYTHING)
    c = augment_pair(image, mask, np.random.default_rng(6), EVERYTHING)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], image)  # it did something


@pytest.mark.parametrize("shape", [(24, 24, 16), (32, 28)])
def test_mask_stays_binary_with_its_dtype(shape):
    image, mask = _tube(shape)
    for seed in range(8):
        out_img, out_mask = augment_pair(image, mask, np.random.default_rng(seed), EVERYTHING)
        assert out_img.dtype == np.float32 and out_img.shape == image.shape
        assert out_mask.dtype == mask.dtype and out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 1}
        assert out_mask.any()


@pytest.mark.parametrize("cfg", [AugmentConfig.identity(), AugmentConfig(strength=0.0), replace(EVERYTHING, strength=0.0)])
def test_identity_returns_inputs_unchanged(cfg):
    for shape in [(24, 24, 16), (30, 20)]:
        image, mask = _tube(shape)
        out_img, out_mask = augment_pair(image, mask, np.random.default_rng(0), cfg)
        np.testing.assert_array_equal(out_img, image)
        np.testing.assert_array_equal(out_mask, mask)


def test_flip_only_flips_both_left_right():
    image, mask = _tube(centre=(7.0, 11.0))  # off-centre along x: a flip is visible
    cfg = replace(AugmentConfig.identity(), p_flip=1.0)
    out_img, out_mask = augment_pair(image, mask, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out_img, image[::-1])
    np.testing.assert_array_equal(out_mask, mask[::-1])
    assert not np.array_equal(out_mask, mask)


def test_rotation_keeps_mask_volume_and_alignment():
    _, mask = _tube(shape=(40, 40, 12), centre=(26.0, 20.0), radius=6.0)
    image = mask.astype(np.float32)  # the image is the mask: any misalignment shows
    cfg = replace(AugmentConfig.identity(), p_spatial=1.0, max_rotation_deg=15.0, max_tilt_deg=0.0, scale_range=(1.0, 1.0))
    moved = 0
    for seed in range(6):
        out_img, out_mask = augment_pair(image, mask, np.random.default_rng(seed), cfg)
        assert abs(int(out_mask.sum()) - int(mask.sum())) <= 0.04 * mask.sum()
        np.testing.assert_array_equal(out_img >= 0.5, out_mask.astype(bool))
        moved += not np.array_equal(out_mask, mask)
    assert moved >= 4  # the tube is off-centre: rotations move it


def test_elastic_and_scaling_move_image_and_mask_together():
    _, mask = _tube(shape=(32, 32, 12), radius=6.0)
    image = mask.astype(np.float32)
    cfg = replace(AugmentConfig.identity(), p_elastic=1.0, elastic_alpha=3.0, p_spatial=1.0, scale_range=(0.85, 1.15))
    for seed in range(4):
        out_img, out_mask = augment_pair(image, mask, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(out_img >= 0.5, out_mask.astype(bool))
        assert not np.array_equal(out_mask, mask)
        assert 0.6 * mask.sum() < out_mask.sum() < 1.5 * mask.sum()


def test_intensity_changes_leave_the_mask_alone():
    image, mask = _tube()
    cfg = replace(AugmentConfig.identity(), p_intensity=1.0, p_gamma=1.0, p_noise=1.0)
    out_img, out_mask = augment_pair(image, mask, np.random.default_rng(1), cfg)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.allclose(out_img, image)
    assert np.corrcoef(out_img.ravel(), image.ravel())[0, 1] > 0.8  # the same picture


def test_soft_targets_are_not_thresholded():
    image, _ = _tube(shape=(32, 32))
    heat = np.exp(-((np.arange(32)[:, None] - 16.0) ** 2 + (np.arange(32)[None, :] - 15.0) ** 2) / 18).astype(np.float32)
    _, out = augment_pair(image, heat, np.random.default_rng(2), replace(EVERYTHING, p_flip=0.0), binary=False)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert len(np.unique(out)) > 10


def test_strength_scales_everything():
    half = AugmentConfig(strength=0.5).resolved()
    full = AugmentConfig()
    assert half.strength == 1.0
    assert half.p_flip == pytest.approx(full.p_flip / 2)
    assert half.max_rotation_deg == pytest.approx(full.max_rotation_deg / 2)
    assert half.scale_range == pytest.approx((0.95, 1.05))
    assert half.gamma_range == pytest.approx((0.8**0.5, 1.25**0.5))
    assert half.noise_std == pytest.approx(full.noise_std / 2)
    zero = AugmentConfig(strength=0.0).resolved()
    assert zero.scale_range == (1.0, 1.0) and zero.gamma_range == (1.0, 1.0) and zero.elastic_alpha == 0.0


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError):
        AugmentConfig(p_flip=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(strength=-0.1)
    with pytest.raises(ValueError):
        AugmentConfig(scale_range=(1.2, 0.9))
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"rotation": 3})
    cfg = AugmentConfig(strength=0.3, scale_range=(0.8, 1.2))
    assert AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError):
        augment_pair(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), np.random.default_rng(0))


def test_the_clean_view_is_the_moved_patch_before_the_acquisition():
    """``clean_view``: the same augmented image as without it (same random stream), and a second
    target channel that went through the flip and the spatial transform only, standardised."""
    from lumbo_bids.intensity import robust_standardise

    image, mask = _tube(centre=(7.0, 11.0))
    randomised = replace(AugmentConfig.domain_randomised(thick_axes="balanced"), p_flip=1.0, p_spatial=0.0, p_elastic=0.0)
    randomised = replace(randomised, p_lowres=1.0)
    out_img, out_mask = augment_pair(image, mask, np.random.default_rng(4), randomised)
    with_view, target = augment_pair(image, mask, np.random.default_rng(4), randomised, clean_view=True)
    np.testing.assert_array_equal(with_view, out_img)
    assert target.shape == (*mask.shape, 2) and target.dtype == np.float32
    np.testing.assert_array_equal(target[..., 0], out_mask)
    flipped = image[::-1]
    expected = robust_standardise((flipped - flipped.min()) / (flipped.max() - flipped.min()), np.ones(image.shape, bool))
    np.testing.assert_allclose(target[..., 1], expected, rtol=1e-3, atol=1e-3)
    assert np.abs(with_view - target[..., 1]).mean() > 0.05  # the student's patch was degraded
    moved, moved_target = augment_pair(image, mask, np.random.default_rng(1), EVERYTHING, clean_view=True)
    plain, plain_mask = augment_pair(image, mask, np.random.default_rng(1), EVERYTHING)
    np.testing.assert_array_equal(moved, plain)
    np.testing.assert_array_equal(moved_target[..., 0], plain_mask)
    inside = moved_target[..., 1][moved_target[..., 0] > 0].mean()
    assert inside > moved_target[..., 1][moved_target[..., 0] == 0].mean() + 1.5  # the view moved with the mask
