"""End to end: ``run.py BIDS OUT participant`` on the real example dataset, with the shipped models.

One participant run (module fixture) is checked from every side: exit code, file list, native
geometry of every mask, Dice against the manual masks, the lumbar image without a mask, the
sidecars, bids-validator-deno on the derivatives, and a second run that reuses the work dir.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, IMAGE_MASK_PAIRS, REPO

from lumbo_bids.metrics import dice

pytestmark = pytest.mark.slow

RUN = [sys.executable, str(REPO / "run.py")]
LUMBAR = DS_SPINE_MINI / "sub-sctLumbar" / "anat" / "sub-sctLumbar_T2w.nii.gz"
TF_NOTICE = re.compile(r"absl::InitializeLog|port\.cc|cpu_feature_guard|oneDNN|Memory patch|retracing")
NIPYPE_INFO = re.compile(r"\[nipype\.\w+\] INFO|\[Node\]|\[MultiProc\]|\[Job \d+\]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a progress bar's \r, \b or escape sequences


def _contrast(image: Path) -> str:
    suffix = image.name.split(".nii")[0].rsplit("_", 1)[1]
    return "T2starw" if suffix == "T2star" else suffix


def _mask_path(out: Path, image: Path) -> Path:
    subject = image.parent.parent.name
    return out / subject / "anat" / f"{subject}_space-orig_label-SC_desc-{_contrast(image)}_mask.nii.gz"


def run_participant(out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the app's own default
    cmd = [*RUN, str(DS_SPINE_MINI), str(out), "participant", "-w", str(work), "--nprocs", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def participant_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    out, work = root / "out", root / "work"
    proc = run_participant(out, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, work, proc


def test_every_image_gets_a_mask_on_its_native_grid(participant_run):
    out, _, _ = participant_run
    images = sorted(DS_SPINE_MINI.glob("sub-*/anat/*.nii.gz"))
    assert len(images) == 8
    for image in images:
        produced = _mask_path(out, image)
        assert produced.is_file(), f"missing {produced}"
        src, seg = nib.load(image), nib.load(produced)
        assert seg.shape == src.shape[:3]
        np.testing.assert_array_equal(seg.affine, src.affine)
        assert seg.get_data_dtype() == np.uint8
        data = np.asanyarray(seg.dataobj)
        assert set(np.unique(data)) <= {0, 1}
        assert data.sum() > 0, f"{produced} is empty"


def test_dice_against_manual_masks(participant_run):
    out, _, _ = participant_run
    scores = {}
    for image, manual in IMAGE_MASK_PAIRS:
        produced = np.asanyarray(nib.load(_mask_path(out, image)).dataobj) > 0
        scores[image.name] = dice(produced, np.asanyarray(nib.load(manual).dataobj) > 0.5)
    print("\n".join(f"{name}\t{score:.3f}" for name, score in scores.items()))
    assert len(scores) == 7
    assert min(scores.values()) >= 0.80, scores


def test_lumbar_image_without_mask_is_plausible(participant_run):
    """No manual mask: the localiser finds the cord; the mask is one continuous tube that ends
    (the conus) inside the field of view, with a cord-sized cross-section."""
    out, _, _ = participant_run
    img = nib.load(LUMBAR)
    seg = nib.as_closest_canonical(nib.load(_mask_path(out, LUMBAR)))  # RAS: axis 2 runs I->S
    data = np.asanyarray(seg.dataobj) > 0
    zooms = seg.header.get_zooms()[:3]
    per_slice = data.sum(axis=(0, 1))
    z = np.flatnonzero(per_slice)
    assert z.size > 0
    assert np.all(np.diff(z) == 1), "cord mask has gaps along z"
    assert z[0] > 0, "cord runs down to the bottom of the image: no conus found"
    area = per_slice[z] * zooms[0] * zooms[1]
    assert 10 <= np.median(area) <= 120, f"median cross-section {np.median(area):.1f} mm^2 is not cord-sized"
    length = z.size * zooms[2]
    assert length >= 20, f"only {length:.0f} mm of cord found"
    # the cord stays near the middle of the field of view in the left-right direction
    x = np.flatnonzero(data.any(axis=(1, 2)))
    assert abs(x.mean() - data.shape[0] / 2) < data.shape[0] / 4
    assert img.shape[:3] == data.shape


def test_sidecars_describe_the_mask(participant_run):
    out, _, _ = participant_run
    image = DS_SPINE_MINI / "sub-unf01" / "anat" / "sub-unf01_T2w.nii.gz"
    meta = json.loads(_mask_path(out, image).with_suffix("").with_suffix(".json").read_text())
    assert meta["Type"] == "ROI" and meta["SpatialReference"] == "orig" and meta["Manual"] is False
    assert meta["Sources"] == ["bids:raw:sub-unf01/anat/sub-unf01_T2w.nii.gz"]
    assert meta["Model"]["Checksum"].startswith("sha256:") and meta["Threshold"] == 0.5
    assert meta["CenterlineMethod"] == "manual mask"
    assert meta["QCFlags"] == [] and meta["QCMeasures"]["max_gap_mm"] == 0  # QC failure flags: a good mask
    lumbar = json.loads(_mask_path(out, LUMBAR).with_suffix("").with_suffix(".json").read_text())
    assert lumbar["CenterlineMethod"].startswith("automatic")
    assert lumbar["QCMeasures"]["end_tapers"] == 1  # its lowest slices are thin (~14 mm above the expert's tip)
    # but the network is sure of that end (the probability drops to background right below it): what
    # gives it away is its shape, a piece hanging below a neck of 4-5 mm^2 (not a taper), ~12 mm of it
    assert lumbar["QCMeasures"]["end_ambiguous_mm"] <= 5 and lumbar["QCMeasures"]["end_necked_mm"] > 5
    assert lumbar["QCFlags"] == ["cord_end_uncertain"]


def _lowest_mm(path: Path) -> float:
    """Height (mm, world z) of the lowest voxel of a mask."""
    img = nib.load(path)
    ijk = np.argwhere(np.asarray(img.dataobj) > 0)
    return float(nib.affines.apply_affine(img.affine, ijk)[:, 2].min())


def test_a_mask_that_ends_above_the_manual_masks_end_stops_short(participant_run):
    """With a manual mask the QC knows where an expert says the cord goes: a conus taper above the
    manual end is short (``stop_short_mm`` = the distance, flagged beyond 6 mm); without one, as on
    sub-sctLumbar, a taper is not (the localiser follows the canal down the cauda equina)."""
    out, _, _ = participant_run
    for image, manual in IMAGE_MASK_PAIRS:
        meta = json.loads(_mask_path(out, image).with_suffix("").with_suffix(".json").read_text())
        gap = _lowest_mm(_mask_path(out, image)) - _lowest_mm(manual)
        thick = float(nib.load(manual).header.get_zooms()[2])  # one slice of slack either way
        assert meta["QCMeasures"]["stop_short_mm"] == pytest.approx(max(gap, 0.0), abs=thick), image.name
        if gap > 6 + thick:
            assert "cord_stops_short" in meta["QCFlags"], image.name
        elif gap < 6 - thick:
            assert "cord_stops_short" not in meta["QCFlags"], image.name
    lumbar = json.loads(_mask_path(out, LUMBAR).with_suffix("").with_suffix(".json").read_text())
    assert lumbar["QCMeasures"]["bottom_gap_mm"] > 6 and lumbar["QCMeasures"]["stop_short_mm"] == 0


def test_preprocessed_outputs_are_written(participant_run):
    out, _, _ = participant_run
    anat = out / "sub-sctTesting" / "anat"
    stem = "sub-sctTesting_space-orig_res-05mm"
    preproc = nib.load(anat / f"{stem}_desc-preproc_T2w.nii.gz")
    assert np.allclose(preproc.header.get_zooms()[:3], 0.5)
    assert nib.aff2axcodes(preproc.affine) == ("L", "A", "S")  # SCT "RPI"
    manual = nib.load(anat / f"{stem}_label-SC_desc-T2w_mask.nii.gz")
    assert manual.shape == preproc.shape and np.allclose(manual.affine, preproc.affine)
    assert np.asanyarray(manual.dataobj).sum() > 0
    centerline = nib.load(anat / f"{stem}_label-centerline_desc-T2w_mask.nii.gz")
    assert np.asanyarray(centerline.dataobj).sum(axis=(0, 1)).max() == 1  # one voxel per slice
    csv = (anat / "sub-sctTesting_space-orig_desc-T2w_centerline.csv").read_text().splitlines()
    assert csv[0] == "slice,x_mm,y_mm,z_mm" and len(csv) > 10
    sidecar = json.loads((anat / f"{stem}_desc-preproc_T2w.json").read_text())
    assert sidecar["SkullStripped"] is False and sidecar["CropSize"] == [64, 64]


def test_derivatives_pass_the_bids_validator(participant_run):
    out, _, _ = participant_run
    validator = Path(sys.executable).parent / "bids-validator-deno"
    proc = subprocess.run([str(validator), "--format", "json", str(out)], capture_output=True, text=True, timeout=600)
    report = json.loads(proc.stdout)
    issues = [(i["severity"], i["code"], i.get("location")) for i in report["issues"]["issues"]]
    assert [i for i in issues if i[0] in ("error", "warning")] == []  # not even a warning


def test_second_run_reuses_the_work_dir(participant_run, tmp_path):
    """Same -w, new OUTPUT_DIR: nothing is recomputed, every derivative is written again."""
    out, work, _ = participant_run
    results = sorted(work.rglob("result_segment.pklz")) + sorted(work.rglob("result_localise.pklz"))
    assert len(results) == 9  # 8 segmentations + the lumbar localisation
    before = {p: p.stat().st_mtime_ns for p in results}
    out2 = tmp_path / "out2"
    proc = run_participant(out2, work, "--participant-label", "sctLumbar", "sctTesting", "-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert NIPYPE_INFO.search(proc.stderr), proc.stderr[-3000:]  # -v brings Nipype's detail back
    assert {p: p.stat().st_mtime_ns for p in results} == before
    for image in DS_SPINE_MINI.glob("sub-sct*/anat/*.nii.gz"):
        first, second = _mask_path(out, image), _mask_path(out2, image)
        assert second.is_file()
        np.testing.assert_array_equal(np.asanyarray(nib.load(first).dataobj), np.asanyarray(nib.load(second).dataobj))


def test_morphometrics_and_evaluation_tables(participant_run):
    out, _, _ = participant_run
    anat = out / "sub-unf01" / "anat"
    stem = "sub-unf01_space-orig_label-SC_desc-T2w"
    rows = [r.split("\t") for r in (anat / f"{stem}_morphometrics.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["slice", "csa_mm2", "area_mm2"]
    csa = np.array([float(r[1]) for r in rows[1:]])
    assert 30 < np.median(csa) < 120, np.median(csa)  # adult cervical cord: ~50-90 mm^2
    meta = json.loads((anat / f"{stem}_morphometrics.json").read_text())
    assert meta["csa_mm2"]["Units"] == "mm^2" and meta["CordVolume_mm3"] > 0 and meta["CordLength_mm"] > 0
    evaluation = json.loads((anat / f"{stem}_evaluation.json").read_text())
    image, manual = next((i, m) for i, m in IMAGE_MASK_PAIRS if i.name == "sub-unf01_T2w.nii.gz")
    produced = np.asanyarray(nib.load(_mask_path(out, image)).dataobj)
    assert evaluation["Dice"] == pytest.approx(dice(produced > 0, np.asanyarray(nib.load(manual).dataobj) > 0.5), abs=1e-4)
    assert 0 <= evaluation["HD95_mm"] < 10
    per_slice = (anat / f"{stem}_evaluation.tsv").read_text().splitlines()
    assert per_slice[0] == "slice\tdice" and len(per_slice) > 2
    # the lumbar image: no manual mask, so no evaluation; its conus tip lies inside the image
    lumbar = json.loads(
        (out / "sub-sctLumbar" / "anat" / "sub-sctLumbar_space-orig_label-SC_desc-T2w_morphometrics.json").read_text()
    )
    img = nib.load(LUMBAR)
    tip_vox = np.linalg.solve(img.affine, [*lumbar["ConusTip_mm"], 1.0])[:3]
    assert np.all(tip_vox >= -0.5) and np.all(tip_vox <= np.array(img.shape[:3]) - 0.5)
    assert not (out / "sub-sctLumbar" / "anat" / "sub-sctLumbar_space-orig_label-SC_desc-T2w_evaluation.tsv").exists()


def test_subject_reports_are_self_contained(participant_run):
    out, _, _ = participant_run
    for subject, n_images in (("sctTesting", 3), ("sctLumbar", 1), ("unf01", 3), ("PAM50small", 1)):
        page = (out / f"sub-{subject}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        assert page.count('src="data:image/png;base64,') == 2 * n_images
        assert "http://" not in page and "https://" not in page and "<script" not in page
        assert len(list((out / f"sub-{subject}" / "figures").glob("*.png"))) == 4 * n_images  # 2 views, ± overlay
    lumbar = (out / "sub-sctLumbar.html").read_text()
    assert "centerline found automatically" in lumbar and "conus tip if in view" in lumbar
    assert "Dice vs manual mask" in (out / "sub-unf01.html").read_text()


def test_default_terminal_output_fits_one_screen(participant_run):
    """No Nipype detail, no TensorFlow notice, no control character; one line per image when it
    is segmented and one when it is done (Dice, centerline source, report); the run ends with the
    reports and the log."""
    out, work, proc = participant_run
    lines = proc.stderr.splitlines()
    assert len(lines) <= 40, proc.stderr
    assert not TF_NOTICE.search(proc.stderr), proc.stderr
    assert not NIPYPE_INFO.search(proc.stderr), proc.stderr
    assert not CONTROL.search(proc.stderr)
    assert sum(line.endswith(" · segment") for line in lines) == 8, proc.stderr  # each image reaches the model
    done = {line.split(" · ")[1]: line for line in lines if " · done in " in line}
    assert len(done) == 8, proc.stderr
    for image, line in done.items():
        manual = image != "sub-sctLumbar T2w"
        assert ("Dice 0." in line) == manual, line
        assert ("centerline: manual mask" if manual else "centerline: localiser") in line, line
        assert f"report {out / image.split()[0]}.html" in line, line
        assert " · flags: " in line, line  # the QC failure flags ("none", or their names)
    assert lines[-7] == "QC reports (open in a web browser):", proc.stderr
    reports = sorted(out.glob("sub-*.html"))
    assert sorted(Path(line.strip()) for line in lines[-6:-2]) == reports
    assert lines[-2].endswith(f": {out / 'qc' / 'index.html'}") and lines[-2].startswith("study QC page"), lines[-2]
    log = Path(lines[-1].removeprefix("full log: "))
    assert log.parent == work / "logs" and log.is_file(), lines[-1]
    text = log.read_text()
    assert NIPYPE_INFO.search(text) and not CONTROL.search(text)  # the detail is in the log file


@pytest.mark.parametrize(
    "image", [LUMBAR, DS_SPINE_MINI / "sub-unf01" / "anat" / "sub-unf01_T2star.nii.gz"], ids=["localiser", "mask"]
)
def test_library_segment_equals_the_participant_level(participant_run, image):
    """``lumbo_bids.segment`` (no Nipype) writes nothing and gives the participant level's mask."""
    from lumbo_bids import segment

    out, _, _ = participant_run
    manual = next((m for i, m in IMAGE_MASK_PAIRS if i == image), None)
    mask = segment(image, mask=manual)
    written = nib.load(_mask_path(out, image))
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), np.asanyarray(written.dataobj))
    np.testing.assert_array_equal(mask.affine, written.affine)
