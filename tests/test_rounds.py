"""Issue 25, part 3: each group run is a round; group/rounds.tsv shows, per image, its rating, its
label's source and how much its automatic mask changed since the last round."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.derivatives import image_output_path
from lumbo_bids.reports.rounds import write_round
from lumbo_bids.utils.bids import build_layout, collect_anat


def _mask(out, anat, shift=0):
    img = nib.load(anat.path)
    data = np.zeros(img.shape[:3], np.uint8)
    c = [s // 2 for s in img.shape[:3]]
    data[c[0] - 3 + shift : c[0] + 3 + shift, c[1] - 3 : c[1] + 3, :] = 1
    path = image_output_path(out, anat, "mask")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine), path)


def test_rounds_record_rating_label_and_the_change_of_each_mask(tmp_path):
    inputs = collect_anat(build_layout(DS_SPINE_MINI), ["unf01", "sctLumbar"], None, {}, LABELS)
    anats = [a for items in inputs.values() for a in items]
    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    t2w = next(a for a in anats if a.stem == "sub-unf01_T2w")
    out = tmp_path / "out"
    assert write_round(out, anats, {}, {}) is None  # nothing segmented yet: no round
    for anat in (lumbar, t2w):
        _mask(out, anat)
    ratings, labels = {lumbar.stem: "pass"}, {lumbar.stem: "accepted automatic mask", t2w.stem: "manual"}
    table = write_round(out, anats, ratings, labels)
    assert (out / "group" / "rounds" / "round-01" / f"{lumbar.stem}_mask.nii.gz").is_file()
    _mask(out, lumbar, shift=3)  # the next participant run (a fine-tuned model) moved this mask by half its width
    write_round(out, anats, ratings, labels)
    rows = [r.split("\t") for r in table.read_text().splitlines()]
    assert rows[0] == ["round", "image", "rating", "label", "dice_vs_last_round"]
    by = {(r[0], r[1]): r for r in rows[1:]}
    assert by[("1", lumbar.stem)][2:] == ["pass", "accepted automatic mask", "n/a"]
    assert by[("1", t2w.stem)][2:] == ["unrated", "manual", "n/a"]
    assert by[("2", t2w.stem)][4] == "1.0000"  # unchanged
    assert float(by[("2", lumbar.stem)][4]) == 0.5  # 6 voxels wide, shifted by 3: half overlap
    assert len(rows) == 5  # two images, two rounds (the other unf01 images have no mask)
