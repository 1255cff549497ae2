"""What makes the base models general: robust intensity plan, domain randomisation, synthesis.

Each property is checked on small synthetic images whose right answer is known, and the
synthetic-image path once on the bundled label maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lumbo_bids.intensity import apply_intensity, robust_standardise
from lumbo_bids.training.acquisition import bias_field, gibbs_ringing, random_lut, simulate_resolution
from lumbo_bids.training.augment import AugmentConfig, augment_pair
from lumbo_bids.training.cases import TrainingCase
from lumbo_bids.training.streams import iter_patches
from lumbo_bids.training.synth import BONE, CORD, CSF, OUTER, ROOTS, SHELL, derive_labels, lumbar_phantom, synthesise

LABEL_MAPS = Path(__file__).resolve().parents[1] / "examples" / "label-maps-spinegeneric"


def _cord_and_csf(shape=(40, 40, 24), cord_r=5.0, csf_r=9.0) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(shape[0]) - 19.5, np.arange(shape[1]) - 19.5, indexing="ij")
    r2 = (xx**2 + yy**2)[..., None] * np.ones(shape[2])
    return r2 <= cord_r**2, (r2 > cord_r**2) & (r2 <= csf_r**2)


# --- intensity ---------------------------------------------------------------------------


def test_robust_standardise_ignores_scale_offset_and_outliers():
    rng = np.random.default_rng(0)
    image = rng.gamma(4.0, 50.0, size=(30, 30, 20)).astype(np.float32) + 1.0
    out = robust_standardise(image)
    fg = image > 0
    assert abs(out[fg].mean()) < 1e-4 and abs(out[fg].std() - 1) < 1e-3
    np.testing.assert_allclose(robust_standardise(image * 7.5 + 300), out, atol=1e-4)  # another scanner scaling
    spiked = image.copy()
    spiked[0, 0, :3] = 1e6  # a few extreme voxels (fat, vessel, artefact)
    body = np.ones(image.shape, bool)
    body[0, 0, :3] = False
    np.testing.assert_allclose(robust_standardise(spiked)[body], out[body], atol=0.02)
    with pytest.raises(ValueError, match="no foreground"):
        robust_standardise(np.zeros((4, 4, 4)))


def test_apply_intensity_dispatches_every_method():
    image = np.arange(1, 1001, dtype=np.float32).reshape(10, 10, 10)
    robust = apply_intensity(image, {"method": "robust", "clip": [0.5, 99.5]})
    np.testing.assert_array_equal(robust, robust_standardise(image))
    nyul = {"method": "nyul", "percentiles": [1, 50, 99], "standard": [0.0, 10.0, 100.0]}
    assert not np.allclose(apply_intensity(image, nyul), robust)  # a non-linear map of this ramp
    assert apply_intensity(image, None).shape == image.shape  # percentile fallback
    with pytest.raises(ValueError, match="unknown intensity method"):
        apply_intensity(image, {"method": "histogram-magic"})


# --- domain randomisation --------------------------------------------------------------


def test_domain_randomisation_is_off_by_default_and_on_when_asked():
    assert not AugmentConfig().randomises_domain
    cfg = AugmentConfig.domain_randomised()
    assert cfg.randomises_domain and cfg.p_lut > 0 and cfg.p_lowres > 0
    assert not AugmentConfig.domain_randomised(amount=0.0).randomises_domain
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AugmentConfig.domain_randomised(amount=1.5)


def test_simulated_slice_thickness_averages_along_that_axis_only():
    image = np.zeros((8, 8, 40), np.float32)
    image[:, :, ::2] = 1.0  # stripes one voxel thick along z
    thick = simulate_resolution(image, (1.0, 1.0, 6.0))  # 3 mm slices on a 0.5 mm grid
    assert thick.shape == image.shape
    assert thick[:, :, 5:35].std() < 0.05 * image.std()  # the stripes are averaged away
    np.testing.assert_allclose(thick[:, :, 5:35].mean(), 0.5, atol=0.05)
    inplane = np.zeros((40, 8, 8), np.float32)
    inplane[::2] = 1.0
    np.testing.assert_array_equal(simulate_resolution(inplane, (1.0, 1.0, 6.0)), inplane)  # x untouched
    np.testing.assert_array_equal(simulate_resolution(image, (1.0, 1.0, 1.0)), image)


def test_lut_bias_and_ringing_stay_in_range_and_are_reproducible():
    unit = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 10, 10)
    lut = random_lut(unit, np.random.default_rng(1))
    assert lut.min() >= 0 and lut.max() <= 1
    np.testing.assert_array_equal(lut, random_lut(unit, np.random.default_rng(1)))
    bias = bias_field((12, 10, 8), 0.3, np.random.default_rng(2))
    assert bias.shape == (12, 10, 8) and (bias > 0).all() and bias.std() > 0.01
    edge = np.zeros((64, 4), np.float32)
    edge[32:] = 1.0
    ringing = gibbs_ringing(edge, axis=0, keep=0.4)
    assert ringing.max() > 1.02  # overshoot next to the edge: Gibbs ringing


def test_domain_randomised_patches_are_standardised_and_keep_the_mask():
    cord, csf = _cord_and_csf()
    image = (cord * 1.0 + csf * 2.0 + 0.5).astype(np.float32)
    mask = cord.astype(np.uint8)
    cfg = AugmentConfig(
        p_flip=0, p_spatial=0, p_elastic=0, p_intensity=0, p_gamma=0, p_noise=0, p_lut=1, p_lowres=1, p_bias=1, p_rician=1
    )
    contrasts = []
    for seed in range(6):
        out, out_mask = augment_pair(image, mask, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(out_mask, mask)  # intensity-only changes
        assert abs(out.mean()) < 1e-3 and abs(out.std() - 1) < 0.05  # re-standardised as inference does
        contrasts.append(out[cord].mean() - out[csf].mean())
    assert min(contrasts) < 0 < max(contrasts)  # the cord is darker than CSF in some, brighter in others


# --- synthetic images ----------------------------------------------------------------


def test_derive_labels_puts_shells_outside_the_canal():
    cord, csf = _cord_and_csf()
    labels = derive_labels(cord, csf, voxel_mm=0.5)
    assert (labels[cord] == CORD).all() and (labels[csf] == CSF).all()
    assert set(np.unique(labels)) == {CORD, CSF, SHELL, BONE, OUTER}
    r = np.hypot(*np.meshgrid(np.arange(40) - 19.5, np.arange(40) - 19.5, indexing="ij"))
    ring = labels[:, :, 0]
    assert (ring[(r > 9.6) & (r < 11.5)] == SHELL).all()  # within 1.5 mm of the canal
    assert (ring[(r > 12.5) & (r < 20.5)] == BONE).all()  # 1.5-6 mm
    with pytest.raises(ValueError, match="empty"):
        derive_labels(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))


def test_synthesise_gives_each_class_its_own_random_intensity():
    cord, csf = _cord_and_csf()
    labels = derive_labels(cord, csf)
    a = synthesise(labels, np.random.default_rng(0))
    np.testing.assert_array_equal(a, synthesise(labels, np.random.default_rng(0)))
    means = []
    for seed in range(8):
        img = synthesise(labels, np.random.default_rng(seed))
        assert img.shape == labels.shape and img.dtype == np.float32
        inner = cord.copy()
        inner[:, :, [0, -1]] = False
        means.append((img[labels == CORD].mean(), img[labels == CSF].mean()))
    means = np.array(means)
    assert means[:, 0].std() > 0.1 and ((means[:, 0] > means[:, 1]).any() and (means[:, 0] < means[:, 1]).any())


def test_lumbar_phantom_has_a_conus_and_roots_below_it():
    shape = (64, 64, 240)
    tips = []
    for seed in range(8):
        labels = lumbar_phantom(shape, np.random.default_rng(seed))
        assert labels.shape == shape and labels.dtype == np.uint8
        cord, roots, csf = labels == CORD, labels == ROOTS, labels == CSF
        assert roots.any() and csf.any() and not (cord & roots).any()
        z_cord = np.flatnonzero(cord.any(axis=(0, 1)))
        if z_cord.size == 0:  # the conus above the field of view: roots only
            continue
        tip = z_cord[0]
        tips.append(tip)
        assert np.all(np.diff(z_cord) == 1) and z_cord[-1] == shape[2] - 1  # one cord up to the top
        area = cord.sum(axis=(0, 1))
        assert area[tip] < 0.3 * np.median(area[z_cord])  # it tapers to a tip
        assert roots[:, :, :tip].any()  # cauda equina below the conus
    assert len(set(tips)) >= 3  # the conus is at a random level


def test_lumbar_phantom_roots_are_scattered_or_in_a_dorsal_bundle():
    offsets = []  # mean posterior offset (mm) of the roots from the canal's centre, slice by slice
    for seed in range(8):
        labels = lumbar_phantom((64, 64, 240), np.random.default_rng(seed), dorsal_roots=0.5)
        roots, canal = labels == ROOTS, np.isin(labels, (CORD, CSF, ROOTS))
        ys = np.arange(64, dtype=float)[None, :]
        per_slice = [
            (ys * roots[:, :, z]).sum() / roots[:, :, z].sum() - (ys * canal[:, :, z]).sum() / canal[:, :, z].sum()
            for z in np.flatnonzero(roots.any(axis=(0, 1)))
        ]
        offsets.append(0.5 * float(np.mean(per_slice)))
    offsets = np.array(offsets)
    assert (offsets < -2.0).sum() >= 2  # bundles against the posterior wall (-y in RPI)
    assert (np.abs(offsets) < 1.0).sum() >= 2  # roots spread over the whole canal
    with pytest.raises(ValueError, match="dorsal_roots"):
        lumbar_phantom((64, 64, 240), np.random.default_rng(0), dorsal_roots=1.5)


def test_synthetic_fraction_sets_the_share_of_synthetic_patches(tmp_path):
    cord, csf = _cord_and_csf((40, 40, 60))
    np.save(tmp_path / "labels.npy", derive_labels(cord, csf))
    np.save(tmp_path / "image.npy", cord.astype(np.float32))
    np.save(tmp_path / "cord.npy", cord.astype(np.uint8))
    real = [TrainingCase(f"sub-{k}", f"real{k}", tmp_path / "image.npy", tmp_path / "cord.npy") for k in range(4)]
    synth = TrainingCase("synth-01", "synth01", tmp_path / "labels.npy", tmp_path / "cord.npy", synthetic=True)

    def synthetic_share(fraction):
        stream = iter_patches([*real, synth], (16, 16, 16), patches_per_epoch=100, seed=0, synthetic_fraction=fraction)
        patches = [next(stream)[0] for _ in range(100)]
        return np.mean([not np.isin(p, (0.0, 1.0)).all() for p in patches])  # a real patch is binary here

    assert synthetic_share(None) == pytest.approx(0.2)  # even over the 5 cases
    assert synthetic_share(0.5) == pytest.approx(0.5)
    assert synthetic_share(0.0) == 0.0
    with pytest.raises(ValueError, match="synthetic_fraction"):
        iter_patches(real, (16, 16, 16), synthetic_fraction=1.5)


def test_case_weights_set_each_cases_share_of_the_patches(tmp_path):
    """TrainingCase.weight: a case of weight 3 draws three times the patches of one of weight 1; equal
    weights draw the very stream of unweighted cases (the recorded recipes reproduce)."""
    from dataclasses import replace

    cord, _ = _cord_and_csf((40, 40, 60))
    np.save(tmp_path / "cord.npy", cord.astype(np.uint8))
    cases = []
    for k in range(3):  # a constant image per case: its value names the case a patch came from
        np.save(tmp_path / f"image{k}.npy", np.full(cord.shape, k + 1, dtype=np.float32))
        cases.append(TrainingCase(f"sub-{k}", f"real{k}", tmp_path / f"image{k}.npy", tmp_path / "cord.npy"))

    def owners(cases, n=100, **kw):
        stream = iter_patches(cases, (16, 16, 16), patches_per_epoch=n, seed=0, **kw)
        return np.array([int(next(stream)[0].max()) for _ in range(n)])

    weighted = [cases[0], replace(cases[1], weight=3.0), replace(cases[2], weight=6.0)]
    assert np.bincount(owners(weighted), minlength=4)[1:].tolist() == [10, 30, 60]
    assert np.bincount(owners(weighted, n=7), minlength=4).sum() == 7  # shares that do not divide evenly
    np.testing.assert_array_equal(owners([replace(c, weight=2.0) for c in cases]), owners(cases))
    with pytest.raises(ValueError, match="weight"):
        iter_patches([replace(cases[0], weight=0.0), cases[1]], (16, 16, 16))


def test_phantom_share_weighs_the_phantoms_against_the_label_maps(tmp_path):
    """train_base_model --phantom-share S: the phantoms together draw S of the synthetic patches,
    whatever their number."""
    import sys

    sys.path.insert(0, str(LABEL_MAPS.parents[1] / "scripts"))
    from train_base_model import main, weigh_phantoms

    maps = [TrainingCase(f"synth-{k}", f"m{k}", tmp_path / "a.npy", tmp_path / "b.npy", synthetic=True) for k in range(10)]
    phantoms = [TrainingCase(f"phantom-{k}", f"p{k}", tmp_path / "a.npy", tmp_path / "b.npy", synthetic=True) for k in range(120)]
    weighted = weigh_phantoms(maps, phantoms, 0.5)
    assert sum(c.weight for c in weighted) == pytest.approx(sum(c.weight for c in maps))
    assert sum(c.weight for c in weigh_phantoms(maps, phantoms, 0.8)) == pytest.approx(4 * len(maps))
    assert weigh_phantoms(maps, phantoms, None) == phantoms
    with pytest.raises(SystemExit, match="no label maps"):
        weigh_phantoms([], phantoms, 0.5)
    with pytest.raises(SystemExit):
        main(["--phantom-share", "1.0"])


def test_synthetic_case_draws_a_new_image_every_epoch(tmp_path):
    cord, csf = _cord_and_csf((40, 40, 60))
    np.save(tmp_path / "labels.npy", derive_labels(cord, csf))
    np.save(tmp_path / "cord.npy", cord.astype(np.uint8))
    case = TrainingCase("synth-01", "synth01", tmp_path / "labels.npy", tmp_path / "cord.npy", synthetic=True)
    first = [next(iter_patches([case], (24, 24, 24), patches_per_epoch=1, seed=1, start_epoch=e)) for e in (0, 1)]
    again = next(iter_patches([case], (24, 24, 24), patches_per_epoch=1, seed=1, start_epoch=0))
    np.testing.assert_array_equal(first[0][0], again[0])  # reproducible
    assert not np.allclose(first[0][0], first[1][0])  # a new image next epoch
    for image, target, _ in first:
        assert image.dtype == np.float32 and abs(image.mean()) < 1e-3  # standardised like a real stack
        assert set(np.unique(target)) <= {0.0, 1.0} and target.any()


def test_bundled_label_maps_become_synthetic_cases(tmp_path):
    import sys

    sys.path.insert(0, str(LABEL_MAPS.parents[1] / "scripts"))
    import shutil

    from train_base_model import CROP_SIZE, label_map_cases

    assert len(list(LABEL_MAPS.glob("sub-*/anat/*_T2w_seg-manual.nii.gz"))) == 10
    for sub in ("sub-cardiff03", "sub-tokyoSkyra06"):  # two of them, to keep the test fast
        shutil.copytree(LABEL_MAPS / sub, tmp_path / "maps" / sub)
    cases = label_map_cases(tmp_path / "maps", tmp_path)
    assert len(cases) == 2 and all(c.synthetic for c in cases)
    labels, mask = np.load(cases[0].image), np.load(cases[0].mask)
    assert labels.shape[:2] == CROP_SIZE and labels.shape == mask.shape
    np.testing.assert_array_equal(mask, labels == CORD)
    centre = np.array(CROP_SIZE) / 2
    for z in np.flatnonzero(mask.any(axis=(0, 1)))[::10]:  # cropped around the cord's centerline
        com = np.argwhere(mask[:, :, z]).mean(axis=0)
        assert np.linalg.norm(com - centre) < 3.0


def test_localiser_synthetic_cases_are_label_maps_at_1mm_and_conus_phantoms(tmp_path):
    """train_base_model --loc-synthetic: a label map becomes a whole-extent 1 mm case (not a
    crop: the localiser sees whole slices), plus conus phantoms whose cord mask is label 1."""
    import shutil
    import sys

    import nibabel as nib

    sys.path.insert(0, str(LABEL_MAPS.parents[1] / "scripts"))
    from train_base_model import LOCALISER_RESOLUTION, localiser_synthetic_cases

    shutil.copytree(LABEL_MAPS / "sub-cardiff03", tmp_path / "maps" / "sub-cardiff03")
    cases = localiser_synthetic_cases(tmp_path / "maps", 2, tmp_path / "out", seed=0, dorsal_roots=0.5)
    assert [c.subject for c in cases] == ["synth-sub-cardiff03", "phantom-00", "phantom-01"]
    assert all(c.synthetic for c in cases)
    source = nib.load(LABEL_MAPS / "sub-cardiff03" / "anat" / "sub-cardiff03_T2w_seg-manual.nii.gz")
    extent = np.array(source.shape) * np.array(source.header.get_zooms()[:3])
    labels = np.load(cases[0].image)
    assert LOCALISER_RESOLUTION == 1.0
    assert np.abs(np.sort(labels.shape) - np.sort(extent)).max() <= 2  # 1 mm voxels, in any axis order
    for case in cases:
        labels, mask = np.load(case.image), np.load(case.mask)
        np.testing.assert_array_equal(mask, labels == CORD)
        assert mask.any()
    assert np.load(cases[1].image).shape == (96, 96, 160)


def test_fine_tuning_keeps_a_robust_plan_and_learns_nyul_landmarks_otherwise(tmp_path):
    from lumbo_bids.training.finetune import RawCase, learn_intensity

    rng = np.random.default_rng(0)
    cases = []
    for k in range(2):
        np.save(tmp_path / f"i{k}.npy", rng.gamma(3.0, 40.0 * (k + 1), size=(16, 16, 8)).astype(np.float32) + 1)
        cases.append(RawCase(f"sub-{k}", f"i{k}", "T2w", tmp_path / f"i{k}.npy", tmp_path / f"i{k}.npy"))
    robust = {"method": "robust", "clip": [0.5, 99.5]}
    assert learn_intensity(cases, robust) == robust
    learned = learn_intensity(cases, None)  # older models: landmarks from the training images
    assert learned["method"] == "nyul" and len(learned["standard"]) == len(learned["percentiles"])
    assert learned["standard"][0] == 0.0 and learned["standard"][-1] == 100.0


def test_evaluation_acquisitions_are_thick_box_slices_and_calibrated_noise():
    """scripts/evaluate_base_models.py: a 3 mm box-profile acquisition averages blocks of 6
    slices (then interpolates between them) along z only; Rician noise has the asked sigma."""
    import sys

    sys.path.insert(0, str(LABEL_MAPS.parents[1] / "scripts"))
    from evaluate_base_models import box_resolution, rician

    image = np.zeros((4, 4, 36), np.float32)
    image[..., 1::2] = 2.0  # alternating slices: a thick slice sees their mean
    thick = box_resolution(image, (1, 1, 6))
    assert thick.shape == image.shape
    np.testing.assert_allclose(thick[..., 3:-3], 1.0, atol=1e-5)
    ramp = np.broadcast_to(np.arange(36, dtype=np.float32), (4, 4, 36))
    np.testing.assert_allclose(box_resolution(ramp, (1, 1, 6))[..., 3:-3], ramp[..., 3:-3], atol=0.51)
    in_plane = np.zeros((12, 12, 4), np.float32)
    in_plane[::2] = 2.0
    np.testing.assert_allclose(box_resolution(in_plane, (2, 1, 1))[1:-1], 1.0, atol=1e-5)
    np.testing.assert_array_equal(box_resolution(in_plane, (1, 1, 6)), in_plane)  # too few slices: as is

    background = np.zeros((64, 64, 64), np.float32)
    cord = np.zeros_like(background, bool)
    cord[:8] = True
    background[:8] = 80.0
    noisy = rician(background, cord, snr=8.0, seed=0)  # sigma = 80 / 8 = 10
    assert abs(noisy[16:].mean() - 10.0 * np.sqrt(np.pi / 2)) < 0.2  # Rayleigh where there is no signal
    np.testing.assert_array_equal(noisy, rician(background, cord, snr=8.0, seed=0))


def test_evaluation_table_gives_worst_mean_and_the_volume_ratio_range():
    """scripts/evaluate_base_models.py: per model, worst / mean Dice per condition and the
    min / median / max of predicted over manual volume across every image and condition."""
    import sys

    sys.path.insert(0, str(LABEL_MAPS.parents[1] / "scripts"))
    from evaluate_base_models import CONDITIONS, markdown_table, per_image_table, score

    mask = np.zeros((4, 4, 4), bool)
    mask[:2] = True
    predicted = np.zeros_like(mask)
    predicted[:1] = True  # half the manual volume, all of it inside: Dice 2 * 16 / (32 + 16)
    row = score("m", "a", "as_acquired", predicted, mask, 0.5)
    assert (row["dice"], row["volume_ratio"], row["end_gap_mm"]) == ("0.6667", "0.5000", "0.0")
    conus = np.zeros((4, 4, 20), bool)
    conus[1:3, 1:3, 2:] = True  # the manual cord ends at slice 2
    short = conus.copy()
    short[:, :, :10] = False  # the prediction ends at slice 10: 8 slices of 0.5 mm above it
    assert score("m", "a", "as_acquired", short, conus, 0.5)["end_gap_mm"] == "4.0"
    assert score("m", "a", "as_acquired", np.zeros_like(conus), conus, 0.5)["end_gap_mm"] == ""
    assert per_image_table([score("m", "a", "as_acquired", short, conus, 0.5)], ["as_acquired"]).endswith(
        "| a | m | 0.714 (0.56, end +4.0 mm) |"  # Dice 2 * 10 / (18 + 10), volume 10 / 18
    )

    rows = [
        {"model": "m", "image": image, "condition": condition, "dice": f"{dice}", "volume_ratio": f"{ratio}"}
        for image, dice, ratio in (("a", 0.8, 0.5), ("b", 0.9, 1.0))
        for condition in CONDITIONS
    ]
    table = markdown_table(rows).splitlines()
    assert table[2:4] == ["| a | 0.800 |", "| b | 0.900 |"]
    assert "| worst / mean, as_acquired | 0.800 / 0.850 |" in table
    assert table[-1] == "| volume / manual, min / median / max | 0.50 / 0.75 / 1.00 |"
    coronal = markdown_table([r for r in rows if r["condition"] == "coronal3mm"], ["coronal3mm"]).splitlines()
    assert coronal[0] == "| image (coronal3mm) | m |" and coronal[2:4] == table[2:4]  # no as-acquired rows: the one asked for
