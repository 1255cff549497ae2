"""Ranking unlabelled images for annotation: synthetic studies with a known best order, and the
real example dataset's headers and participant outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.annotate import Candidate, acquisition_features, anatomy_features, feature_matrix, rank_for_annotation
from lumbo_bids.derivatives import atomic_write_json, image_output_path
from lumbo_bids.reports.annotate import COLUMNS, header_features, uncertainty_of, write_annotate_next
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects

T2_1MM = acquisition_features([0.5, 0.5, 1.0], [64, 64, 200], "T2w")
T1_3MM = acquisition_features([1.0, 1.0, 3.0], [64, 64, 40], "T1w")


def _cand(image, features, labelled=False, uncertainty=0.0, rated_fail=False):
    return Candidate(image, image.split("_")[0], labelled, features, uncertainty, rated_fail)


def test_acquisition_features_known_values():
    f = acquisition_features([0.8, 0.8, 3.0], [100, 120, 20], "T2starw")
    assert f["log_inplane_mm"] == pytest.approx(np.log(0.8))
    assert f["log_slice_mm"] == pytest.approx(np.log(3.0))
    assert f["log_fov_si_mm"] == pytest.approx(np.log(60.0))
    assert (f["contrast_T2starw"], f["contrast_T2w"], f["contrast_other"]) == (1.0, 0.0, 0.0)
    assert acquisition_features([1, 1, 1], [1, 1, 1], "FLAIR")["contrast_other"] == 1.0


def test_anatomy_features_tolerate_missing_values():
    assert anatomy_features(None) == {}
    f = anatomy_features({"CordLength_mm": 100.0, "MeanCSA_mm2": None, "ConusTip_mm": [1, 2, 3]})
    assert f == {"log_cord_length_mm": pytest.approx(np.log(100.0)), "has_conus": 1.0}


def test_feature_matrix_fills_missing_with_mean_and_drops_constant_columns():
    cands = [_cand("a", {"x": 1.0, "c": 5.0}), _cand("b", {"x": 3.0, "c": 5.0}), _cand("c", {"c": 5.0})]
    x = feature_matrix(cands)  # columns sorted: c, x
    assert np.all(x[:, 0] == 0)  # constant: no information
    assert x[0, 1] == pytest.approx(-1.0) and x[1, 1] == pytest.approx(1.0) and x[2, 1] == 0.0


def test_novel_then_uncertain_then_look_alikes():
    """Annotated: two T2w 1 mm images. The thick-slice T1w is the most unlike them (first); once it
    is picked, its twin is no longer novel, so the flagged T2w look-alike comes before it."""
    cands = [
        _cand("sub-01_T2w", T2_1MM, labelled=True),
        _cand("sub-02_T2w", {**T2_1MM, "log_fov_si_mm": T2_1MM["log_fov_si_mm"] + 0.1}, labelled=True),
        _cand("sub-03_T2w", T2_1MM, uncertainty=0.0),
        _cand("sub-04_T1w", T1_3MM, uncertainty=0.0),
        _cand("sub-05_T1w", T1_3MM, uncertainty=0.0),
        _cand("sub-06_T2w", T2_1MM, uncertainty=0.75),
    ]
    ranked = rank_for_annotation(cands)
    order = [r.candidate.image for r in ranked]
    assert order[0] in {"sub-04_T1w", "sub-05_T1w"}
    assert order[1] == "sub-06_T2w"
    assert {r.candidate.image for r in ranked} == {"sub-03_T2w", "sub-04_T1w", "sub-05_T1w", "sub-06_T2w"}
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert ranked[0].novelty > 0.9 and "unlike the annotated images" in ranked[0].reason
    assert ranked[1].nearest in {"sub-01_T2w", "sub-02_T2w"}
    assert all(a.score >= b.score for a, b in zip(ranked[1:], ranked[2:]))


def test_rated_fail_comes_first_and_no_labels_means_all_novel():
    cands = [_cand("sub-01_T2w", T2_1MM, uncertainty=0.9), _cand("sub-02_T2w", T2_1MM, rated_fail=True)]
    ranked = rank_for_annotation(cands)
    assert ranked[0].candidate.image == "sub-02_T2w" and "rated fail" in ranked[0].reason
    assert "no annotated image yet" in ranked[0].reason
    assert rank_for_annotation([_cand("sub-01_T2w", T2_1MM, labelled=True)]) == []


def test_uncertainty_from_sidecar():
    assert uncertainty_of(None)[0] == 1.0
    assert uncertainty_of({"QCFlags": []}) == (0.0, "")
    u, why = uncertainty_of({"QCFlags": ["mask_breaks", "csa_out_of_range"]})
    assert u == pytest.approx(0.75) and why == "flags: mask_breaks, csa_out_of_range"
    # the network's margin under the mask orders unflagged masks; a flag halves the confidence
    assert uncertainty_of({"QCFlags": [], "QCMeasures": {"margin_in_mask": 0.8}})[0] == pytest.approx(0.2)
    assert uncertainty_of({"QCFlags": ["mask_breaks"], "QCMeasures": {"margin_in_mask": 0.8}})[0] == pytest.approx(0.6)
    assert uncertainty_of({"QCFlags": [], "QCMeasures": {"margin_in_mask": None}})[0] == 0.0


def test_header_features_do_not_depend_on_storage_order(tmp_path):
    """The same image stored with permuted and flipped axes has the same features."""
    src = DS_SPINE_MINI / "sub-sctLumbar" / "anat" / "sub-sctLumbar_T2w.nii.gz"
    img = nib.load(str(src))
    turned = img.as_reoriented(np.array([[2, -1], [0, 1], [1, -1]]))
    nib.save(turned, tmp_path / "turned.nii.gz")
    a, b = header_features(src, "T2w"), header_features(tmp_path / "turned.nii.gz", "T2w")
    assert a == pytest.approx(b)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    assert np.exp(a["log_slice_mm"]) == pytest.approx(zooms[np.argmax(np.abs(img.affine[2, :3]))], rel=1e-3)


def test_annotate_next_on_the_example_dataset(tmp_path):
    """sub-sctLumbar is the only image without a manual mask: ranked alone, first as not yet
    segmented, then with the uncertainty of its flagged participant output."""
    layout = build_layout(DS_SPINE_MINI)
    inputs = collect_anat(layout, select_subjects(layout, None), None, {}, LABELS)
    anats = [a for items in inputs.values() for a in items]
    out = tmp_path / "out"
    table = write_annotate_next(out, anats, DS_SPINE_MINI).read_text().splitlines()
    assert table[0].split("\t") == list(COLUMNS)
    row = dict(zip(COLUMNS, table[1].split("\t")))
    assert len(table) == 2 and row["image"] == "sub-sctLumbar_T2w" and row["rank"] == "1"
    assert row["uncertainty"] == "1.000" and "not segmented yet" in row["reason"]
    assert row["source"] == "sub-sctLumbar/anat/sub-sctLumbar_T2w.nii.gz"
    assert row["nearest_annotated"].startswith("sub-")

    lumbar = next(a for a in anats if a.subject == "sctLumbar")
    atomic_write_json(image_output_path(out, lumbar, "mask", extension=".json"), {"QCFlags": ["mask_breaks"]})
    row = dict(zip(COLUMNS, write_annotate_next(out, anats, DS_SPINE_MINI).read_text().splitlines()[1].split("\t")))
    assert row["uncertainty"] == "0.500" and "flags: mask_breaks" in row["reason"]
    assert write_annotate_next(out, [a for a in anats if a.mask is not None], DS_SPINE_MINI) is None
    assert not any(Path(DS_SPINE_MINI).rglob("annotate_next.tsv"))


def test_unreadable_image_is_skipped_with_a_warning(tmp_path, caplog):
    layout = build_layout(DS_SPINE_MINI)
    inputs = collect_anat(layout, ["sctLumbar"], None, {}, LABELS)
    (anat,) = inputs["sctLumbar"]
    broken = tmp_path / "bids" / "sub-sctLumbar" / "anat" / anat.path.name
    broken.parent.mkdir(parents=True)
    shutil.copy(anat.path, broken)
    broken.write_bytes(b"not a nifti")
    from dataclasses import replace

    assert write_annotate_next(tmp_path / "out", [replace(anat, path=broken)], tmp_path / "bids") is None
    assert "annotate next" in caplog.text and str(broken) in caplog.text
