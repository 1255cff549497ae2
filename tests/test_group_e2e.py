"""End to end: ``run.py BIDS OUT group`` fine-tunes the shipped model and localiser on the example
dataset, the participant level segments with the result (``--model OUT/group/model``, its
localiser for the image without a mask), and ``group --learning-curve`` writes its table and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, REPO

from lumbo_bids.model.artifact import load_artifact
from lumbo_bids.model.selection import SHIPPED_LOCALISER, SHIPPED_SEGMENTATION

pytestmark = pytest.mark.slow

RUN = [sys.executable, str(REPO / "run.py")]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=1800)


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    out, work = root / "out", root / "work"
    proc = run(
        DS_SPINE_MINI, out, "group", "-w", work, "--skip-bids-validation", "--nprocs", "2",
        "--epochs", "3", "--steps-per-epoch", "4", "--validation-subjects", "sctTesting",
        "--localiser-epochs", "2", "--localiser-steps", "3",
        "--keep-worse-localiser",  # 2 x 3 steps may not beat the shipped one: nested whatever its validation
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, work, proc


def test_group_writes_a_loadable_fine_tuned_artifact(group_run):
    out, _, _ = group_run
    artifact = load_artifact(out / "group" / "model")
    shipped = load_artifact(SHIPPED_SEGMENTATION)
    assert artifact.task == "segmentation" and artifact.name.endswith("-finetuned")
    assert artifact.checksum != shipped.checksum
    assert artifact.architecture_config == shipped.architecture_config
    # the base model's intensity plan is kept: the robust per-image z-score learns nothing
    assert shipped.plan.intensity["method"] == "robust"
    assert artifact.plan.intensity == shipped.plan.intensity
    x = np.random.default_rng(0).normal(size=(1, 48, 48, 48, 1)).astype(np.float32)
    y = np.asarray(artifact.build_model()(x, training=False))
    assert y.shape == x.shape and np.isfinite(y).all()


def test_split_is_by_subject_and_the_card_records_it(group_run):
    out, _, _ = group_run
    card = json.loads((out / "group" / "model_card.json").read_text())
    assert card["validation_subjects"] == ["sctTesting"]
    assert sorted(card["train_subjects"]) == ["PAM50small", "unf01"]
    assert not set(card["train_images"]) & set(card["validation_images"])
    assert card["epochs_run"] == 3 and card["hyperparameters"]["steps_per_epoch"] == 4
    assert card["initial_model"]["checksum"] == load_artifact(SHIPPED_SEGMENTATION).checksum


def test_training_report_files(group_run):
    out, _, _ = group_run
    rows = (out / "group" / "metrics.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    assert {"epoch", "loss", "dice", "val_loss", "val_dice"} <= set(header)
    assert [r.split("\t")[0] for r in rows[1:]] == ["-1", "0", "1", "2"]  # -1: before fine-tuning
    # the whole-image validation Dice: at the start, and on the kept epoch's row only
    image_dice = [r.split("\t")[header.index("val_image_dice")] for r in rows[1:]]
    card = json.loads((out / "group" / "model_card.json").read_text())
    before = card["validation_dice_before"]
    assert float(image_dice[0]) == pytest.approx(sum(before.values()) / len(before), abs=1e-4)
    assert sum(v != "n/a" for v in image_dice) == 2
    assert (out / "group" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "group" / "training" / "checkpoints" / "best.weights.h5").is_file()
    assert list((out / "group" / "training" / "tensorboard").rglob("events.out.tfevents.*"))


def test_validation_dice_before_and_after(group_run):
    out, _, proc = group_run
    rows = [r.split("\t") for r in (out / "group" / "validation_dice.tsv").read_text().splitlines()]
    assert rows[0][:4] == ["image", "subject", "dice_before", "dice_after"]
    table = {r[0]: (float(r[2]), float(r[3])) for r in rows[1:]}
    assert set(table) == {"sub-sctTesting_T1w", "sub-sctTesting_T2starw", "sub-sctTesting_T2w"}
    print("\n".join(f"{k}\tbefore {b:.3f}\tafter {a:.3f}" for k, (b, a) in table.items()))
    before = np.mean([b for b, _ in table.values()])
    after = np.mean([a for _, a in table.values()])
    # the shipped model saw every subject, so it is already good on sctTesting: a few steps of
    # fine-tuning on the other subjects must keep it so (a broken loop would not)
    assert after >= before - 0.05, (before, after)
    assert after >= 0.8
    assert "validation Dice after fine-tuning" in proc.stderr


def test_participant_uses_the_fine_tuned_model(group_run, tmp_path):
    out, work, _ = group_run
    model = out / "group" / "model"
    seg_out = tmp_path / "seg"
    proc = run(DS_SPINE_MINI, seg_out, "participant", "-w", work, "--skip-bids-validation",
               "--participant-label", "sctTesting", "--model", model)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    mask = seg_out / "sub-sctTesting" / "anat" / "sub-sctTesting_space-orig_label-SC_desc-T2w_mask.nii.gz"
    meta = json.loads(mask.with_suffix("").with_suffix(".json").read_text())
    assert meta["Model"]["Checksum"] == f"sha256:{load_artifact(model).checksum}"
    assert np.asanyarray(nib.load(mask).dataobj).sum() > 0


def test_localiser_is_fine_tuned_and_nested_in_the_model(group_run):
    out, _, proc = group_run
    model = out / "group" / "model"
    entry = load_artifact(model).manifest["localiser"]
    localiser = load_artifact(model / entry["path"])
    shipped = load_artifact(SHIPPED_LOCALISER)
    assert localiser.task == "localisation" and localiser.name == "lumbo_bids-cord-localiser-finetuned"
    assert entry["sha256"] == localiser.checksum != shipped.checksum
    assert localiser.architecture_config == shipped.architecture_config
    tuned, base = localiser.build_model().get_weights(), shipped.build_model().get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(tuned, base))  # the weights did change
    lines = [line for line in proc.stderr.splitlines() if line.startswith("localiser epoch ")]
    assert [line.split(" · ")[0] for line in lines] == ["localiser epoch 1/2", "localiser epoch 2/2"]
    card = json.loads((out / "group" / "model_card.json").read_text())["localiser"]
    assert card["fine_tuned"] and card["epochs_run"] == 2 and card["hyperparameters"]["steps_per_epoch"] == 3
    assert card["initial_model"]["checksum"] == shipped.checksum


def test_centerline_error_before_and_after_is_reported(group_run):
    out, _, _ = group_run
    rows = [r.split("\t") for r in (out / "group" / "validation_dice.tsv").read_text().splitlines()]
    header = rows[0]
    assert header[4:] == [f"centerline_{s}_mm_{w}" for s in ("mean", "max") for w in ("before", "after")]
    card = json.loads((out / "group" / "model_card.json").read_text())["localiser"]
    for row in rows[1:]:
        values = dict(zip(header, row))
        print(values)
        for when in ("before", "after"):
            recorded = card[f"centerline_error_mm_{when}"][row[0]]
            mean, worst = float(values[f"centerline_mean_mm_{when}"]), float(values[f"centerline_max_mm_{when}"])
            assert 0 <= mean <= worst < 20  # mm: the cord found on every validation image
            assert (mean, worst) == pytest.approx((recorded["mean_mm"], recorded["max_mm"]), abs=0.006)
    means = [float(dict(zip(header, r))["centerline_mean_mm_before"]) for r in rows[1:]]
    assert card["mean_centerline_error_mm_before"] == pytest.approx(np.mean(means), abs=0.01)


def test_participant_localises_with_the_fine_tuned_localiser(group_run, tmp_path):
    out, work, _ = group_run
    seg_out = tmp_path / "seg"
    proc = run(DS_SPINE_MINI, seg_out, "participant", "-w", work, "--skip-bids-validation",
               "--participant-label", "sctLumbar", "--model", out / "group" / "model")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "centerline: localiser" in proc.stderr
    mask = seg_out / "sub-sctLumbar" / "anat" / "sub-sctLumbar_space-orig_label-SC_desc-T2w_mask.nii.gz"
    meta = json.loads(mask.with_suffix("").with_suffix(".json").read_text())
    assert (
        meta["CenterlineMethod"]
        == "automatic (lumbo_bids lumbo_bids-cord-localiser-finetuned, bundled with the segmentation model)"
    )
    assert np.asanyarray(nib.load(mask).dataobj).sum() > 0


@pytest.fixture(scope="module")
def curve_run(group_run):
    out, work, _ = group_run  # same work dir: the preprocessing is cached
    curve_out = out.parent / "curve"
    proc = run(
        DS_SPINE_MINI, curve_out, "group", "-w", work, "--skip-bids-validation", "--nprocs", "2",
        "--epochs", "2", "--steps-per-epoch", "3", "--validation-subjects", "sctTesting", "--learning-curve",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return curve_out, proc


def test_learning_curve_outputs(curve_run, group_run):
    out, proc = curve_run
    rows = [r.split("\t") for r in (out / "group" / "learning_curve.tsv").read_text().splitlines()]
    images = ["sub-sctTesting_T1w", "sub-sctTesting_T2starw", "sub-sctTesting_T2w"]
    assert rows[0] == ["n_subjects", "subjects", "mean_dice", *(f"dice_{i}" for i in images)]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert rows[1][1] == "n/a" and rows[3][1] == "PAM50small,unf01" and rows[2][1] in ("PAM50small", "unf01")
    for row in rows[1:]:
        dice = [float(v) for v in row[3:]]
        assert float(row[2]) == pytest.approx(np.mean(dice), abs=1e-3) and all(0.5 < d <= 1 for d in dice)
    # n = 0 is the starting model: the same Dice as the group run's "before"
    before = json.loads((group_run[0] / "group" / "model_card.json").read_text())["validation_dice_before"]
    assert [float(v) for v in rows[1][3:]] == pytest.approx([before[i] for i in images], abs=1e-4)
    assert (out / "group" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "group" / "model").exists()  # a curve, not a model
    assert "learning curve (mean validation Dice): n=0:" in proc.stderr


def test_group_without_any_mask_is_a_clear_error(tmp_path):
    proc = run(DS_SPINE_MINI, tmp_path / "o", "group", "-w", tmp_path / "w", "--skip-bids-validation",
               "--participant-label", "sctLumbar")  # fmt: skip
    assert proc.returncode == 66
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert lines and "no selected image has a manual mask" in lines[-1] and "Traceback" not in proc.stderr


def test_group_ranks_the_unlabelled_images_for_annotation(group_run):
    """sub-sctLumbar has no mask: group/annotate_next.tsv ranks it, and the study page links it."""
    out, _, _ = group_run
    rows = (out / "group" / "annotate_next.tsv").read_text().splitlines()
    assert rows[0].startswith("rank\timage\tsubject\tscore\treason")
    assert len(rows) == 2 and rows[1].split("\t")[1] == "sub-sctLumbar_T2w"
    assert (out / "qc" / "index.html").is_file()


def test_rate_dont_draw_a_study_without_manual_masks(tmp_path):
    """Issue 25: no manual mask at all. The participant level segments; its masks are rated pass
    in the study page's export format; the group level fine-tunes on those accepted automatic
    masks, the model card says so, and the participant level segments with the result."""
    empty = tmp_path / "labels"
    empty.mkdir()  # a labels dataset without a single mask
    out, work = tmp_path / "out", tmp_path / "work"
    only_t2w = tmp_path / "t2w.json"
    only_t2w.write_text(json.dumps({"anat": {"suffix": ["T2w"]}}))
    common = ["--skip-bids-validation", "--labels-dir", empty, "--bids-filter-file", only_t2w, "--nprocs", "2",
              "--participant-label", "unf01", "sctTesting"]  # fmt: skip
    proc = run(DS_SPINE_MINI, out, "participant", "-w", work, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = sorted(out.glob("sub-*/anat/*_label-SC_desc-T2w_mask.nii.gz"))
    assert len(masks) == 2
    rows = ["image\trating\tmodel\tnote"]  # what "Export ratings" writes
    for mask in masks:
        meta = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
        rows.append(f"{mask.name.split('_space-')[0]}_T2w\tpass\t{meta['Model']['Checksum']}\tlooks right")
    ratings = tmp_path / "ratings.tsv"
    ratings.write_text("\n".join(rows) + "\n")
    proc = run(DS_SPINE_MINI, out, "group", "-w", work, *common, "--qc-ratings", ratings, "--epochs", "1",
               "--steps-per-epoch", "2", "--no-localiser-finetune", "--validation-subjects", "sctTesting")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 accepted automatic mask(s) rated pass as labels" in proc.stderr
    card = json.loads((out / "group" / "model_card.json").read_text())
    assert card["labels"] == {"sub-sctTesting_T2w": "accepted automatic mask", "sub-unf01_T2w": "accepted automatic mask"}
    assert card["train_images"] == ["sub-unf01_T2w"] and card["validation_images"] == ["sub-sctTesting_T2w"]
    seg = tmp_path / "seg"
    proc = run(DS_SPINE_MINI, seg, "participant", "-w", work, *common[:-2], "unf01", "--model", out / "group" / "model")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(next(seg.glob("sub-unf01/anat/*_label-SC_desc-T2w_mask.json")).read_text())
    assert meta["Model"]["Name"].endswith("-finetuned")
