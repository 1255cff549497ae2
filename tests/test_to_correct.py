"""Issue 25, part 2: correct, don't draw. The automatic masks of the images rated fail and of the
first ones to annotate are written where a manual mask goes, on the source grid, and become
manual masks once moved into the labels dataset."""

from __future__ import annotations

import json
import logging
import shutil

import nibabel as nib
import numpy as np
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.derivatives import atomic_write_json, image_output_path
from lumbo_bids.reports.to_correct import correction_path, write_to_correct
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects


def _automatic_mask(out, anat, value=1):
    """An automatic mask of ``anat`` as the participant level writes it (a block on its grid)."""
    img = nib.load(anat.path)
    data = np.zeros(img.shape[:3], np.uint8)
    centre = [s // 2 for s in img.shape[:3]]
    data[tuple(slice(c - 2, c + 3) for c in centre)] = value
    path = image_output_path(out, anat, "mask")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine), path)
    atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"QCFlags": ["mask_breaks"], "RunID": "r1"})
    return data


def test_rated_fail_and_top_of_annotate_next_get_a_starting_point_that_becomes_manual(tmp_path, caplog):
    layout = build_layout(DS_SPINE_MINI)
    inputs = collect_anat(layout, select_subjects(layout, None), None, {}, LABELS)
    anats = [a for items in inputs.values() for a in items]
    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    out = tmp_path / "out"
    data = _automatic_mask(out, lumbar)
    (out / "group").mkdir(parents=True)
    (out / "group" / "annotate_next.tsv").write_text("rank\timage\n1\tsub-sctLumbar_T2w\n")
    table = write_to_correct(out, anats, rated_fail={"sub-sctTesting_T2w"})  # has a manual mask: no starting point
    rows = [r.split("\t") for r in table.read_text().splitlines()]
    assert rows[0] == ["image", "reason", "mask", "fsleyes", "itksnap"] and len(rows) == 2
    image, reason, mask, fsleyes, itksnap = rows[1]
    assert image == "sub-sctLumbar_T2w" and reason == "rank 1 in annotate_next.tsv"
    target = correction_path(out, lumbar)
    assert mask == str(target) and target.name == "sub-sctLumbar_T2w_label-SC_seg.nii.gz"
    assert target.relative_to(out / "group" / "to_correct").as_posix() == "sub-sctLumbar/anat/" + target.name
    assert fsleyes.startswith("fsleyes ") and str(lumbar.path) in fsleyes and itksnap == f"itksnap -g {lumbar.path} -s {target}"
    source, edit = nib.load(lumbar.path), nib.load(target)  # on the source grid, voxel for voxel
    assert edit.shape == source.shape[:3] and np.allclose(edit.affine, source.affine)
    np.testing.assert_array_equal(np.asanyarray(edit.dataobj), data)
    meta = json.loads(target.with_name(target.name.replace(".nii.gz", ".json")).read_text())
    assert meta["Reason"] == reason and meta["QCFlags"] == ["mask_breaks"] and meta["RunID"] == "r1"
    assert not list(target.parent.glob(".tmp-*"))
    # moved into the labels dataset of a copy of the dataset, it is the image's manual mask
    bids = tmp_path / "bids"
    shutil.copytree(DS_SPINE_MINI, bids, symlinks=True)
    labelled = bids / "derivatives" / "labels" / target.relative_to(out / "group" / "to_correct")
    labelled.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(target, labelled)
    again = collect_anat(build_layout(bids), ["sctLumbar"], None, {}, bids / "derivatives" / "labels")
    assert again["sctLumbar"][0].mask == labelled


def test_a_starting_point_needs_an_automatic_mask_on_the_source_grid(tmp_path, caplog):
    layout = build_layout(DS_SPINE_MINI)
    (lumbar,) = collect_anat(layout, ["sctLumbar"], None, {}, LABELS)["sctLumbar"]
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="lumbo_bids"):
        assert write_to_correct(out, [lumbar], rated_fail={lumbar.stem}) is None  # not segmented yet
    assert "no automatic mask" in caplog.text
    path = image_output_path(out, lumbar, "mask")
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), path)  # another grid
    with caplog.at_level(logging.WARNING, logger="lumbo_bids"):
        assert write_to_correct(out, [lumbar], rated_fail={lumbar.stem}) is None
    assert "not on the source's grid" in caplog.text
