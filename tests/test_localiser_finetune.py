"""Fast checks of the pieces behind the group level's localiser fine-tuning and learning curve:
the centerline error on synthetic lines with a known answer, the nested training subsets, the
curve's table, the choice of the localiser bundled with a fine-tuned model, and one real image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.centerline_error import centerline_error
from lumbo_bids.errors import LumboError
from lumbo_bids.model.selection import (
    SHIPPED_LOCALISER,
    SHIPPED_SEGMENTATION,
    choose_localiser,
    choose_models,
    read_segmentation_model,
)
from lumbo_bids.training.learning_curve import CurvePoint, curve_sizes, curve_subsets, curve_table, run_learning_curve


def test_centerline_error_of_a_shifted_line_is_the_shift_in_mm():
    ref = np.tile([20.0, 30.0], (50, 1))
    pred = ref + [3.0, 4.0]  # 5 voxels away on every slice
    assert centerline_error(pred, ref, (0.5, 0.5)) == pytest.approx((2.5, 2.5))
    assert centerline_error(pred, ref, (1.0, 2.0)) == pytest.approx((np.hypot(3, 8), np.hypot(3, 8)))


def test_centerline_error_mean_and_max_over_the_scored_slices_only():
    ref = np.tile([10.0, 10.0], (10, 1))
    pred = ref.copy()
    pred[7, 0] += 4.0  # one slice 4 voxels off, the rest exact
    pred[0, 1] += 100.0  # far off, but outside the scored slices
    scored = np.zeros(10, bool)
    scored[2:8] = True  # 6 slices
    mean, worst = centerline_error(pred, ref, (0.5, 0.5), scored)
    assert worst == pytest.approx(2.0) and mean == pytest.approx(2.0 / 6)
    assert centerline_error(pred, ref, (0.5, 0.5), np.arange(2, 8)) == pytest.approx((mean, worst))
    assert centerline_error(pred, ref)[1] == pytest.approx(100.0)


def test_centerline_error_refuses_mismatched_lines_or_nothing_to_score():
    with pytest.raises(ValueError, match="must both be"):
        centerline_error(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="no slice"):
        centerline_error(np.zeros((5, 2)), np.zeros((5, 2)), slices=np.zeros(5, bool))


@pytest.mark.parametrize(("n", "sizes"), [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (5, [1, 2, 4, 5]), (8, [1, 2, 4, 8])])
def test_curve_sizes_double_up_to_every_subject(n, sizes):
    assert curve_sizes(n) == sizes


def test_curve_subsets_are_nested_seeded_and_end_with_every_subject():
    subjects = [f"s{i:02d}" for i in range(11)]
    subsets = curve_subsets(subjects, seed=3)
    assert [len(s) for s in subsets] == [1, 2, 4, 8, 11]
    assert all(set(a) < set(b) for a, b in zip(subsets, subsets[1:]))  # a larger point only adds subjects
    assert subsets[-1] == sorted(subjects) and all(s == sorted(s) for s in subsets)
    assert curve_subsets(list(reversed(subjects)), seed=3) == subsets  # the seed decides, not the order given
    assert any(curve_subsets(subjects, seed=k)[0] != subsets[0] for k in range(4, 10))
    with pytest.raises(ValueError):
        curve_sizes(0)


def test_run_learning_curve_scores_the_same_images_at_every_point():
    base = {"a": 0.5, "b": 0.7}
    seen = []

    def fine_tune(subjects):
        seen.append(subjects)
        return {"a": 0.5 + 0.1 * len(subjects), "b": 0.7}

    points = run_learning_curve(base, ["x", "y", "z"], fine_tune, seed=0)
    assert [p.n_subjects for p in points] == [0, 1, 2, 3] and seen == [list(p.subjects) for p in points[1:]]
    assert [p.mean_dice for p in points] == pytest.approx([0.6, 0.65, 0.7, 0.75])
    rows = [r.split("\t") for r in curve_table(points).splitlines()]
    assert rows[0] == ["n_subjects", "subjects", "mean_dice", "dice_a", "dice_b"]
    assert rows[1] == ["0", "n/a", "0.6000", "0.5000", "0.7000"] and rows[4][:3] == ["3", "x,y,z", "0.7500"]
    with pytest.raises(ValueError, match="validation images changed"):
        run_learning_curve(base, ["x"], lambda s: {"a": 1.0}, seed=0)
    assert CurvePoint(("x",), {"a": 1.0}).n_subjects == 1


@pytest.fixture()
def model_with_localiser(tmp_path) -> Path:
    """The shipped segmentation artifact with the shipped localiser nested as its own (as ``group`` writes it)."""
    from lumbo_bids.model.artifact import load_artifact

    model = shutil.copytree(SHIPPED_SEGMENTATION, tmp_path / "model")
    shutil.copytree(SHIPPED_LOCALISER, model / "localiser")
    manifest = json.loads((model / "model.json").read_text())
    manifest["localiser"] = {"path": "localiser", "sha256": load_artifact(SHIPPED_LOCALISER).checksum}
    (model / "model.json").write_text(json.dumps(manifest))
    return model


def test_a_bundled_localiser_is_chosen_unless_sct_models_are_given(model_with_localiser, tmp_path):
    seg = read_segmentation_model(model_with_localiser)
    path, _, description = choose_localiser("T2w", None, seg)
    assert Path(path) == (model_with_localiser / "localiser").resolve() and "bundled with the segmentation model" in description
    sct = tmp_path / "sct"
    sct.mkdir()
    (sct / "t2_ctr.h5").write_bytes(b"not read here")
    assert choose_localiser("T2w", sct, seg)[2] == "SCT t2_ctr.h5"
    config = SimpleNamespace(model=model_with_localiser, sct_models=None)
    assert choose_models(config, "T2w").localiser == path
    assert choose_models(config, "T2w", needs_localiser=False).localiser == ""
    shipped = choose_localiser("T2w", None, read_segmentation_model(SHIPPED_SEGMENTATION))
    assert Path(shipped[0]) == SHIPPED_LOCALISER and "bundled" not in shipped[2]


def test_a_bundled_localiser_that_does_not_match_is_a_clear_error(model_with_localiser):
    manifest = json.loads((model_with_localiser / "model.json").read_text())
    manifest["localiser"]["sha256"] = "0" * 64
    (model_with_localiser / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(LumboError, match="not the localiser the model was saved with"):
        choose_localiser("T2w", None, read_segmentation_model(model_with_localiser))
    manifest["localiser"]["path"] = "../elsewhere"
    (model_with_localiser / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(LumboError, match="not inside the model folder"):
        choose_localiser("T2w", None, read_segmentation_model(model_with_localiser))


def test_shipped_localiser_centerline_error_on_a_real_image(tmp_path):
    """Real-data check: the localiser case of sub-unf01's T2w (1 mm, whole field of view) and the
    shipped localiser's centerline within a few mm of the manual mask's on every slice with cord."""
    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.training.localiser_tuning import centerline_errors, prepare_localiser_case
    from lumbo_bids.utils.images import read_volume

    image = DS_SPINE_MINI / "sub-unf01" / "anat" / "sub-unf01_T2w.nii.gz"
    mask_path = next((LABELS / "sub-unf01" / "anat").glob("sub-unf01_T2w_*.nii.gz"))
    data, affine, _ = read_volume(image)
    mask, _, _ = read_volume(mask_path)
    case = prepare_localiser_case("unf01", "unf01_T2w", data, affine, mask, 1.0, tmp_path)
    fov, cord = np.load(case.image), np.load(case.mask)
    assert fov.shape == cord.shape and cord.sum() > 0 and np.isfinite(fov).all()
    errors = centerline_errors(load_artifact(SHIPPED_LOCALISER).build_model(), [case], 1.0)
    print(errors)
    assert 0 <= errors["unf01_T2w"]["mean_mm"] <= errors["unf01_T2w"]["max_mm"] < 5.0


def test_the_shipped_localiser_runs_at_its_own_1mm_along_z_too(monkeypatch):
    """A 1 mm localiser on the participant level's 0.5 mm stack sees 1 mm slices (half of them:
    the network's cost halves), and its heat comes back on the 0.5 mm grid, on the cord of a
    synthetic tube; a stack already at >= 1 mm along z keeps its slices."""
    from nibabel.affines import from_matvec

    import lumbo_bids.model.inference as inference
    from lumbo_bids.model.localise import localise_heatmap
    from lumbo_bids.model.selection import SHIPPED_LOCALISER

    seen, original = [], inference.predict_slices
    monkeypatch.setattr(inference, "predict_slices", lambda fn, vol, bs: seen.append(vol.shape) or original(fn, vol, bs))
    x, y = np.meshgrid(np.arange(120) - 70.0, np.arange(120) - 55.0, indexing="ij")  # a cord at (70, 55)
    tube = np.where(x**2 + y**2 < 100, 60.0, np.where(x**2 + y**2 < 400, 200.0, 30.0))  # cord, CSF, tissue
    volume = np.repeat(tube[:, :, None], 40, axis=2).astype(np.float32)
    heat = localise_heatmap(SHIPPED_LOCALISER, volume, from_matvec(np.diag([0.5, 0.5, 0.5])))
    assert seen == [(60, 60, 20)] and heat.shape == volume.shape
    hot = np.argwhere(heat[:, :, 20] == heat[:, :, 20].max())[0]
    assert np.abs(hot - (70, 55)).max() <= 4  # on the cord
    localise_heatmap(SHIPPED_LOCALISER, volume[::2, ::2, :], from_matvec(np.diag([1.0, 1.0, 2.0])))
    assert seen[1] == (60, 60, 40)
