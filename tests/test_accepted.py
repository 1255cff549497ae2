"""Issue 25, part 1: automatic masks rated pass become labels (no training here: the selection,
the refusals, the label sources; tests/test_group_e2e.py fine-tunes on them)."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.accepted import ACCEPTED, MANUAL, accepted_images, label_source
from lumbo_bids.derivatives import atomic_write_json, image_output_path
from lumbo_bids.errors import ExitCode, LumboError
from lumbo_bids.group.inputs import check_group_inputs, select_images
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects

MODEL = "sha256:" + "a" * 64


def _inputs(labels_dir):
    layout = build_layout(DS_SPINE_MINI)
    return collect_anat(layout, select_subjects(layout, None), None, {}, labels_dir)


def _automatic(out, anat, checksum=MODEL):
    """The participant level's mask of ``anat`` and its sidecar (the model that made it)."""
    img = nib.load(anat.path)
    data = np.zeros(img.shape[:3], np.uint8)
    along = int(np.argmax(np.abs(img.affine[2, :3])))  # the voxel axis nearest head-foot: the cord's
    data[tuple(slice(None) if k == along else slice(s // 2 - 2, s // 2 + 3) for k, s in enumerate(img.shape[:3]))] = 1
    path = image_output_path(out, anat, "mask")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine), path)
    atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"Model": {"Checksum": checksum}})
    return path


def _ratings(path, rows, model_column=True):
    header = "image\trating\tmodel\tnote" if model_column else "image\trating\tnote"
    lines = [header] + ["\t".join([image, rating, *([model] if model_column else []), ""]) for image, rating, model in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_automatic_masks_rated_pass_are_labels_and_manual_masks_are_preferred(tmp_path):
    inputs = _inputs(LABELS)
    anats = [a for items in inputs.values() for a in items]
    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    manual = next(a for a in anats if a.stem == "sub-unf01_T2w")
    out = tmp_path / "out"
    mask = _automatic(out, lumbar)
    _automatic(out, manual)
    ratings = _ratings(tmp_path / "r.tsv", [(lumbar.stem, "pass", MODEL), (manual.stem, "pass", MODEL)])
    (accepted,) = accepted_images(out, ratings, anats)
    assert accepted.stem == lumbar.stem and accepted.mask == mask and accepted.path == lumbar.path
    assert label_source(accepted, out) == ACCEPTED and label_source(manual, out) == MANUAL
    config = SimpleNamespace(qc_ratings=ratings, output_dir=out, bids_dir=DS_SPINE_MINI, accepted_masks=True)
    chosen, _ = select_images(config, inputs)
    assert lumbar.stem in {a.stem for a in chosen} and len(chosen) == 8  # the 7 manual masks and the accepted one
    assert next(a for a in chosen if a.stem == manual.stem).mask == manual.mask  # manual kept
    config.accepted_masks = False  # --no-accepted-masks
    assert lumbar.stem not in {a.stem for a in select_images(config, inputs)[0]}


def test_a_study_without_any_manual_mask_trains_on_accepted_ones(tmp_path):
    empty = tmp_path / "labels"
    empty.mkdir()
    inputs = _inputs(empty)  # no manual mask at all
    out = tmp_path / "out"
    rows = []
    for anat in (a for items in inputs.values() for a in items if a.subject in ("sctLumbar", "unf01", "sctTesting")):
        _automatic(out, anat)
        rows.append((anat.stem, "pass", MODEL))
    ratings = _ratings(tmp_path / "r.tsv", rows)
    config = SimpleNamespace(
        qc_ratings=ratings, output_dir=out, bids_dir=DS_SPINE_MINI, accepted_masks=True, labels_dir=empty,
        search=None, learning_curve=False, validation_fraction=0.34, validation_subjects=None, random_seed=42,
    )  # fmt: skip
    check_group_inputs(config, inputs)  # enough labels, and subjects for a split
    chosen, _ = select_images(config, inputs)
    assert {a.subject for a in chosen} == {"sctLumbar", "unf01", "sctTesting"}
    assert all(label_source(a, out) == ACCEPTED for a in chosen)
    config.accepted_masks = False
    with pytest.raises(LumboError, match="no selected image has a manual mask") as info:
        check_group_inputs(config, inputs)
    assert info.value.code == ExitCode.NO_INPUT and str(ratings) in str(info.value)


def test_a_pass_without_an_automatic_mask_is_refused(tmp_path):
    anats = [a for items in _inputs(LABELS).values() for a in items]
    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    ratings = _ratings(tmp_path / "r.tsv", [(lumbar.stem, "pass", MODEL)])
    with pytest.raises(LumboError) as info:
        accepted_images(tmp_path / "out", ratings, anats)
    assert info.value.code == ExitCode.NO_INPUT
    assert "sub-sctLumbar_T2w is rated pass" in str(info.value) and "run the participant level" in str(info.value)


def test_a_mask_made_since_by_another_model_is_not_the_rated_one(tmp_path):
    anats = [a for items in _inputs(LABELS).values() for a in items]
    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    out = tmp_path / "out"
    _automatic(out, lumbar, checksum="sha256:" + "b" * 64)  # a rerun with a fine-tuned model since
    ratings = _ratings(tmp_path / "r.tsv", [(lumbar.stem, "pass", MODEL)])
    with pytest.raises(LumboError) as info:
        accepted_images(out, ratings, anats)
    assert info.value.code == ExitCode.BAD_DATA and "not the rated mask" in str(info.value) and "\n" not in str(info.value)
    # a ratings file without the model column (written by hand): no way to tell, the mask is taken
    plain = _ratings(tmp_path / "plain.tsv", [(lumbar.stem, "pass", "")], model_column=False)
    assert [a.stem for a in accepted_images(out, plain, anats)] == [lumbar.stem]
