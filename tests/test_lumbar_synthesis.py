"""The anatomy-true lumbar phantom, thick slices along any axis and the grey-matter core (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from lumbo_bids.training.acquisition import box_kernel, simulate_resolution
from lumbo_bids.training.augment import THICK_AXES, AugmentConfig, augment_pair
from lumbo_bids.training.synth import CORD, CSF, ROOTS, conus_phantom, grey_matter_core, synthesise
from lumbo_bids.training.trainer import TrainConfig

SHAPE = (64, 64, 240)
MM = 2  # voxels per mm at 0.5 mm


def _phantoms(n=10, **kwargs):
    return [conus_phantom(SHAPE, np.random.default_rng(seed), **kwargs) for seed in range(n)]


def test_the_cord_label_ends_at_a_tapered_tip_and_the_filum_goes_on_below():
    tips = []
    for labels in _phantoms(12):
        assert labels.shape == SHAPE and labels.dtype == np.uint8
        cord, roots = labels == CORD, labels == ROOTS
        assert not (cord & roots).any() and (labels == CSF).any()
        z_cord = np.flatnonzero(cord.any(axis=(0, 1)))
        if z_cord.size == 0 or z_cord[0] == 0:  # the tip above or below the field of view
            continue
        tip = int(z_cord[0])
        tips.append(tip)
        assert np.all(np.diff(z_cord) == 1) and z_cord[-1] == SHAPE[2] - 1  # one cord, up to the top
        area = cord.sum(axis=(0, 1)) * 0.25  # mm^2
        assert area[tip] < 3.0 and area[tip : tip + 4 * MM].mean() < 0.35 * area.max()
        assert np.all(np.diff(area[tip : tip + 8 * MM]) >= -0.5)  # widening upwards over the taper (no steps back)
        # the filum: a thin root-class strand under the tip, on every slice down to the bottom
        below = roots[:, :, :tip]
        xy = np.argwhere(cord[:, :, tip])[0]
        near = below[max(xy[0] - 3, 0) : xy[0] + 4, max(xy[1] - 3, 0) : xy[1] + 4, :]
        assert near.any(axis=(0, 1))[-4 * MM :].all()  # the last 4 mm under the tip
    assert len(tips) >= 5 and len(set(tips)) >= 5  # the tip at a random level


def test_roots_leave_beside_the_conus_above_its_tip():
    touching = 0
    for labels in _phantoms(12):
        cord, roots = labels == CORD, labels == ROOTS
        z_cord = np.flatnonzero(cord.any(axis=(0, 1)))
        if z_cord.size == 0 or z_cord[0] < 10:
            continue
        tip = int(z_cord[0])
        from scipy import ndimage

        for z in range(tip + 2, tip + 10 * MM):  # the 10 mm above the tip
            ring = ndimage.binary_dilation(cord[:, :, z], iterations=3) & ~cord[:, :, z]  # 1.5 mm around the cord
            if (roots[:, :, z] & ring).any():
                touching += 1
                break
    assert touching >= 5  # in most phantoms with a tip in view, roots lie against the conus


def test_roots_settle_dorsally_or_spread():
    offsets = []
    for labels in _phantoms(12, dorsal_roots=0.5):
        roots, canal = labels == ROOTS, np.isin(labels, (CORD, CSF, ROOTS))
        ys = np.arange(64, dtype=float)[None, :]
        bottom = range(0, 40)  # 20 mm at the bottom: the cauda equina, far from any exit
        per_slice = [
            (ys * roots[:, :, z]).sum() / roots[:, :, z].sum() - (ys * canal[:, :, z]).sum() / canal[:, :, z].sum()
            for z in bottom
            if roots[:, :, z].sum() > 20
        ]
        offsets.append(0.5 * float(np.mean(per_slice)))
    offsets = np.array(offsets)
    assert (offsets < -2.0).sum() >= 2 and (np.abs(offsets) < 1.5).sum() >= 2
    with pytest.raises(ValueError, match="dorsal_roots"):
        conus_phantom(SHAPE, np.random.default_rng(0), dorsal_roots=-0.1)


def test_the_cord_settles_dorsally_with_its_roots_when_asked():
    """dorsal_cord: in supine phantoms the cord (enlargement, conus) lies against the posterior
    wall among the root bundle; the same seed with 0 draws the same phantom as before."""
    canal_offsets = {}
    for share in (0.0, 1.0):
        offsets = []
        for labels in _phantoms(8, dorsal_roots=1.0, dorsal_cord=share):
            cord, canal = labels == CORD, np.isin(labels, (CORD, CSF, ROOTS))
            ys = np.arange(64, dtype=float)[None, :]
            levels = [z for z in range(SHAPE[2]) if cord[:, :, z].sum() > 40]
            if levels:
                offsets.append(
                    0.5
                    * np.mean([(ys * cord[:, :, z]).sum() / cord[:, :, z].sum() - (ys * canal[:, :, z]).sum() / canal[:, :, z].sum() for z in levels])
                )  # fmt: skip
                assert cord[:, :, levels].sum(axis=(0, 1)).min() > 40  # not flattened against the wall
        canal_offsets[share] = np.array(offsets)
    # mm from the canal's centre, posterior is -y: each cord moved back (the canal leaves it 0-4 mm of room)
    assert np.median(canal_offsets[1.0]) < np.median(canal_offsets[0.0]) - 1.0
    assert canal_offsets[1.0].size >= 5 and np.all(canal_offsets[1.0] < canal_offsets[0.0] - 0.3)
    same = [np.array_equal(a, b) for a, b in zip(_phantoms(3, dorsal_roots=0.5), _phantoms(3, dorsal_roots=0.5, dorsal_cord=0.0))]
    assert all(same)


def test_box_kernel_and_profiles():
    for width in (1.0, 2.0, 3.0, 4.5, 6.0):
        k = box_kernel(width)
        assert k.size % 2 == 1 and k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1])
        assert (k > 0).sum() * 1.0 >= width - 1e-9
    edge = np.zeros((30, 8, 8), dtype=np.float32)
    edge[15:] = 1.0
    box = simulate_resolution(edge, (6.0, 1.0, 1.0), "box")
    gauss = simulate_resolution(edge, (6.0, 1.0, 1.0), "gaussian")
    for out in (box, gauss):  # blurred across x only, an edge stays monotonic, the mean is kept
        assert np.allclose(out, out[:, :1, :1]) and np.all(np.diff(out[:, 0, 0]) >= -1e-6)
        assert 0.0 <= out.min() and out.max() <= 1.0 and abs(out.mean() - edge.mean()) < 0.05
    with pytest.raises(ValueError, match="profile"):
        simulate_resolution(edge, (2.0, 1.0, 1.0), "sinc")


def _blur_along(image: np.ndarray, axis: int) -> float:
    """Mean absolute difference between neighbours along ``axis`` (small: smooth along it)."""
    return float(np.abs(np.diff(image, axis=axis)).mean())


def _thick_axis_counts(noise: np.ndarray, thick_axes: str, draws: int = 60) -> np.ndarray:
    """How often each axis is the thick one (the smoothest) in ``draws`` augmented ``noise``
    patches with every patch thick-sliced as :data:`THICK_AXES` ``[thick_axes]`` says."""
    cfg = AugmentConfig.from_dict(
        {**AugmentConfig.identity().to_dict(), "p_lowres": 1.0, "max_inplane_factor": 1.0, **THICK_AXES[thick_axes]}
    )
    counts = np.zeros(3, dtype=int)
    for seed in range(draws):
        out, _ = augment_pair(noise, np.zeros_like(noise), np.random.default_rng(seed), cfg)
        counts[int(np.argmin([_blur_along(out, a) for a in range(3)]))] += 1
    return counts


def test_thick_slices_fall_along_every_axis_with_any():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(32, 32, 32)).astype(np.float32)
    base = AugmentConfig.identity()
    counts = _thick_axis_counts(noise, "any")
    assert counts[0] > counts[1] > 0 and counts[2] > counts[1]  # sagittal 40 %, coronal 15 %, axial 45 %
    balanced = _thick_axis_counts(noise, "balanced")
    assert balanced[1] > 2 * counts[1] and min(balanced) >= 10  # coronal 35 % against 15 %; sagittal 35 %, axial 30 %
    axial = AugmentConfig.from_dict({**base.to_dict(), "p_lowres": 1.0, "max_inplane_factor": 1.0})
    for seed in range(10):  # the recipe before: thick slices along the cord axis only
        out, _ = augment_pair(noise, np.zeros_like(noise), np.random.default_rng(seed), axial)
        blur = [_blur_along(out, a) for a in range(3)]
        assert blur[2] <= min(blur[:2]) + 1e-6
    with pytest.raises(ValueError, match="sagittal_share"):
        AugmentConfig(sagittal_share=0.8, coronal_share=0.4)
    with pytest.raises(ValueError, match="thick_axes"):
        AugmentConfig.domain_randomised(thick_axes="oblique")
    with pytest.raises(ValueError, match="thick_axes"):
        TrainConfig(thick_axes="oblique")
    assert AugmentConfig.from_dict(AugmentConfig.domain_randomised(thick_axes="any").to_dict()).sagittal_share == 0.4


def test_grey_matter_core_is_the_inner_part_of_the_cord():
    xs, ys = np.mgrid[:41, :41]
    disc = ((xs - 20) ** 2 + (ys - 20) ** 2) <= 10**2
    cord = np.repeat(disc[:, :, None], 4, axis=2)
    core = grey_matter_core(cord, 0.5)
    radius = np.sqrt(core[:, :, 0].sum() / np.pi)
    assert 4.0 < radius < 6.0 and not (core & ~cord).any() and (core.sum(axis=(0, 1)) == core[:, :, 0].sum()).all()
    thin = np.zeros((20, 20, 3), dtype=bool)
    thin[9:11, 9:11] = True  # 1 mm across: too thin for a core
    assert not grey_matter_core(thin, 0.5).any()
    labels = np.full(cord.shape, CSF, dtype=np.uint8)
    labels[cord] = CORD
    spreads = []
    for seed in range(12):  # the core's own intensity differs from the rest of the cord in some images
        img = synthesise(labels, np.random.default_rng(seed), grey_matter=1.0)
        spreads.append(abs(img[core].mean() - img[cord & ~core].mean()))
    assert max(spreads) > 0.2
    same = synthesise(labels, np.random.default_rng(3), grey_matter=0.0)
    np.testing.assert_array_equal(same, synthesise(labels, np.random.default_rng(3)))
    with pytest.raises(ValueError, match="grey_matter"):
        synthesise(labels, np.random.default_rng(0), grey_matter=2.0)
