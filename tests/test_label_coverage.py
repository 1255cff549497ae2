"""Partial manual masks (issue 27, case 7): found on synthetic masks whose answer is known, scored
on their labelled slices only, left out of fine-tuning, warned in the sidecar."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from lumbo_bids.label_coverage import label_coverage
from lumbo_bids.utils.bids import AnatInput

RPI_AFFINE = np.diag([-1.0, 1.0, 1.0, 1.0])  # nibabel LAS = SCT RPI


def tube(nz: int, z0: int = 0, z1: int | None = None, taper: int = 0) -> np.ndarray:
    """A cord of radius 3 on slices [z0, z1), its lowest ``taper`` slices narrowing to a point."""
    xx, yy = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    mask = np.zeros((16, 16, nz), np.uint8)
    for z in range(z0, nz if z1 is None else z1):
        radius = 3.0 * min(1.0, (z - z0 + 1) / taper) if taper else 3.0
        mask[:, :, z] = (xx - 8) ** 2 + (yy - 8) ** 2 <= max(radius, 0.5) ** 2
    return mask


def test_a_mask_through_every_slice_is_complete():
    coverage = label_coverage(tube(40), RPI_AFFINE)
    assert not coverage.partial and coverage.unexplained == 0 and coverage.labelled.all()


def test_a_mask_on_one_of_nine_slices_is_partial():
    mask = np.zeros((16, 16, 9), np.uint8)
    mask[..., 4] = tube(9)[..., 4]
    coverage = label_coverage(mask, RPI_AFFINE)
    assert coverage.partial and coverage.unexplained == 8
    assert "labels the cord on 1 of 9 imaged slices" in coverage.describe()


def test_every_third_slice_labelled_is_partial():
    mask = tube(30)
    mask[..., np.arange(30) % 3 != 0] = 0
    assert label_coverage(mask, RPI_AFFINE).partial


def test_a_conus_inside_the_view_is_not_partial_but_a_cord_stopped_at_full_width_is():
    tapered = tube(100, z0=60, taper=15)  # the cord ends at slice 60 as a conus: 60 slices below it
    cut = tube(100, z0=60)  # the same extent, stopping at full width: the annotator stopped
    assert label_coverage(tapered, RPI_AFFINE).unexplained == 0
    assert not label_coverage(tapered, RPI_AFFINE).partial
    assert label_coverage(cut, RPI_AFFINE).unexplained == 60 and label_coverage(cut, RPI_AFFINE).partial
    assert not label_coverage(tube(100, z1=80), RPI_AFFINE).partial  # 20 slices above its top: under half


def test_slices_without_signal_are_not_imaged():
    mask = tube(20, z0=5, z1=13)
    image = np.zeros(mask.shape, np.float32)
    image[..., 5:13] = 1.0  # only the labelled slices were acquired (zero-filled slab)
    assert label_coverage(mask, RPI_AFFINE).partial
    assert not label_coverage(mask, RPI_AFFINE, image).partial


def test_coverage_is_read_along_the_cord_axis_whatever_the_voxel_order():
    mask = np.zeros((16, 16, 9), np.uint8)
    mask[..., 4] = tube(9)[..., 4]
    psr = mask.transpose(2, 0, 1)  # voxel axis 0 is now head-foot
    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 2], affine[2, 0], affine[3, 3] = -1.0, 1.0, 1.0, 1.0
    coverage = label_coverage(psr, affine)
    assert coverage.partial and int(coverage.labelled.sum()) == 1 and coverage.labelled.size == 9


def _save(data: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, RPI_AFFINE), path)
    return path


def test_evaluation_scores_a_partial_mask_on_its_labelled_slices_only(tmp_path):
    from lumbo_bids.interfaces.morphometry import EvaluateMask

    prediction = tube(9).astype(np.uint8)  # the cord on every slice: right
    reference = np.zeros_like(prediction)
    reference[..., 4] = prediction[..., 4]  # labelled on one slice only
    pred, ref = _save(prediction, tmp_path / "pred.nii.gz"), _save(reference, tmp_path / "ref.nii.gz")
    image = _save(np.ones(prediction.shape, np.float32), tmp_path / "image.nii.gz")
    result = EvaluateMask(in_file=str(pred), reference_file=str(ref), image_file=str(image)).run(cwd=str(tmp_path))
    meta = result.outputs.metadata
    assert meta["Dice"] == 1.0 and meta["RelativeVolumeDifference"] == 0.0
    assert meta["EvaluatedSlices"].startswith("1 of 9")
    full = _save(prediction, tmp_path / "full.nii.gz")  # a complete mask: every slice scored, as before
    meta = EvaluateMask(in_file=str(pred), reference_file=str(full), image_file=str(image)).run(cwd=str(tmp_path))
    assert meta.outputs.metadata["Dice"] == 1.0 and "EvaluatedSlices" not in meta.outputs.metadata


def test_input_check_warns_of_a_partial_mask(tmp_path):
    from lumbo_bids.interfaces.io import ValidateAnat

    mask = np.zeros((16, 16, 9), np.uint8)
    mask[..., 4] = tube(9)[..., 4]
    image = _save(np.ones(mask.shape, np.float32), tmp_path / "image.nii.gz")
    result = ValidateAnat(in_file=str(image), mask_file=str(_save(mask, tmp_path / "mask.nii.gz"))).run(cwd=str(tmp_path))
    assert "1 of 9 imaged slices" in result.outputs.input_warnings["PartialMaskWarning"]
    complete = _save(tube(9), tmp_path / "complete.nii.gz")
    result = ValidateAnat(in_file=str(image), mask_file=str(complete)).run(cwd=str(tmp_path))
    assert "PartialMaskWarning" not in result.outputs.input_warnings


def test_group_level_leaves_partial_masks_out_with_one_line_each(tmp_path, caplog):
    from lumbo_bids.group.inputs import select_images

    anats = []
    for name, mask in (("01", tube(9)), ("02", tube(9)), ("03", np.where(np.arange(9) == 4, tube(9), 0))):
        image = _save(np.ones((16, 16, 9), np.float32), tmp_path / f"sub-{name}_T2w.nii.gz")
        anats.append(AnatInput(image, name, None, "T2w", _save(mask.astype(np.uint8), tmp_path / f"sub-{name}_mask.nii.gz")))
    inputs = {a.subject: [a] for a in anats}
    with caplog.at_level(logging.WARNING, logger="lumbo_bids"):
        chosen, rated_fail = select_images(SimpleNamespace(qc_ratings=None, output_dir=tmp_path, accepted_masks=True), inputs)
    assert [a.subject for a in chosen] == ["01", "02"] and rated_fail == set()
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1 and "sub-03_mask.nii.gz" in lines[0] and "1 of 9 imaged slices" in lines[0]


@pytest.mark.parametrize("mask_name", ["sub-PAM50small_T2w_label-SC_seg.nii.gz", "sub-sctTesting_T2starw_label-SC_seg.nii.gz"])
def test_the_bundled_manual_masks_are_complete(ds_spine_mini, mask_name):
    """Real masks, a conus and an axial slab among them, are not taken for partial ones."""
    mask = next(Path(ds_spine_mini, "derivatives", "labels").rglob(mask_name))
    image = next(Path(ds_spine_mini).glob(f"sub-*/anat/{mask_name.split('_label')[0]}.nii.gz"))
    img = nib.load(image)
    coverage = label_coverage(np.asanyarray(nib.load(mask).dataobj) > 0.5, img.affine, img.get_fdata())
    assert not coverage.partial, json.dumps({"unexplained": coverage.unexplained, "imaged": int(coverage.imaged.sum())})
