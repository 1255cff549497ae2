"""Thick-slice re-acquisition (lumbo_bids.reacquire): geometry and partial volume, known answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from lumbo_bids.reacquire import field_of_view, reacquire, reacquire_mask

REPO = Path(__file__).resolve().parents[1]


def _grid(axcodes: str, zooms=(1.0, 1.0, 1.0), shape=(30, 36, 42)):
    """An affine of ``shape`` in orientation ``axcodes`` with voxel sizes ``zooms`` (ordered as the array)."""
    ras = nib.orientations.axcodes2ornt(tuple(axcodes))
    affine = np.diag([0.0, 0.0, 0.0, 1.0])
    for array_axis, (world_axis, flip) in enumerate(ras):
        affine[int(world_axis), array_axis] = flip * zooms[array_axis]
    affine[:3, 3] = [-12.0, 40.0, -300.0]
    return affine, shape


@pytest.mark.parametrize("axcodes", ["RAS", "LAS", "PSR", "LPI"])
@pytest.mark.parametrize("plane", ["sagittal", "coronal", "axial"])
def test_thick_voxels_sit_at_the_centre_of_what_they_average(axcodes, plane):
    # a volume linear in world space is reproduced exactly at every thick voxel centre (a box mean of
    # a linear function is its value at the centre), so any error in the affine shows
    affine, shape = _grid(axcodes, zooms=(1.0, 0.8, 1.2))
    ijk = np.indices(shape).reshape(3, -1).T
    world = apply_affine(affine, ijk)
    data = (2.0 * world[:, 0] - 0.5 * world[:, 1] + 0.25 * world[:, 2]).reshape(shape)
    thick, thick_affine = reacquire(data, affine, plane, thickness=3.0, inplane=1.0)
    assert nib.aff2axcodes(thick_affine) == ("L", "A", "S")
    zooms = np.sqrt((thick_affine[:3, :3] ** 2).sum(axis=0))
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    assert zooms[axis] == pytest.approx(3.0) and np.delete(zooms, axis) == pytest.approx([1.0, 1.0])
    centres = apply_affine(thick_affine, np.indices(thick.shape).reshape(3, -1).T)
    expected = (2.0 * centres[:, 0] - 0.5 * centres[:, 1] + 0.25 * centres[:, 2]).reshape(thick.shape)
    inner = tuple(slice(2, -2) if n > 4 else slice(None) for n in thick.shape)  # the edges clamp
    assert np.abs(thick[inner] - expected[inner]).max() < 1e-3
    # the thick grid covers the native field of view, not more
    extent = np.abs(affine[:3, :3]) @ np.asarray(shape)  # mm along world x, y, z (RPI axes up to sign)
    covered = zooms * thick.shape
    assert np.all(covered <= extent + 1e-6) and np.all(covered > extent - zooms - 1e-6)


def test_a_thin_structure_is_averaged_over_the_slice():
    # a 1 mm sheet across x in a 1 mm image, re-acquired as 3 mm sagittal slices: one third of it
    # survives in the one thick slice that holds it, and a 0.5 threshold drops it from the mask
    affine, shape = _grid("LAS", shape=(30, 20, 20))
    data = np.zeros(shape, dtype=np.float32)
    data[13] = 3.0
    thick, _ = reacquire(data, affine, "sagittal", thickness=3.0, inplane=1.0)
    assert thick.shape == (10, 20, 20)
    assert thick[4].mean() == pytest.approx(1.0, abs=1e-5) and np.delete(thick, 4, axis=0).max() < 1e-5
    mask, _ = reacquire_mask(data > 0, affine, "sagittal", 3.0, 1.0)
    assert mask.dtype == np.uint8 and not mask.any()
    wide = np.zeros(shape, dtype=np.uint8)
    wide[12:18] = 1  # 6 mm: two whole thick slices
    mask, _ = reacquire_mask(wide, affine, "sagittal", 3.0, 1.0)
    assert mask[4].all() and mask[5].all() and mask.sum() == 2 * 20 * 20


@pytest.mark.parametrize("axcodes", ["RAS", "LPI", "PSR"])
def test_a_smaller_field_of_view_keeps_the_voxels_where_they_were(axcodes):
    affine, shape = _grid(axcodes, zooms=(1.0, 0.8, 2.0))
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    cut, cut_affine = field_of_view(data, affine, bottom_mm=4.0, length_mm=16.0)
    assert nib.aff2axcodes(cut_affine) == ("L", "A", "S")
    step = np.sqrt((cut_affine[:3, 2] ** 2).sum())
    assert cut.shape[2] == round(16.0 / step)  # 16 mm of slices
    world = apply_affine(cut_affine, np.indices(cut.shape).reshape(3, -1).T)
    source = np.round(apply_affine(np.linalg.inv(affine), world)).astype(int)  # same voxel in the source
    assert np.array_equal(cut.ravel(), data[tuple(source.T)])
    lowest = apply_affine(affine, np.indices(shape).reshape(3, -1).T)[:, 2].min()
    assert world[:, 2].min() == pytest.approx(lowest + 4.0)  # 4 mm above the lowest slice's centre
    with pytest.raises(ValueError, match="no slice"):
        field_of_view(data, affine, bottom_mm=500.0, length_mm=20.0)


def test_script_writes_a_bids_dataset_beside_the_input(ds_spine_mini, tmp_path):
    out = tmp_path / "sagittal"
    before = sorted(p.stat().st_mtime_ns for p in ds_spine_mini.rglob("*") if p.is_file())
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reacquire.py"), str(ds_spine_mini), str(out), "--participant-label", "sctTesting"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    image = nib.load(out / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.nii.gz")
    assert np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))[0] == pytest.approx(3.0)
    mask = nib.load(out / "derivatives" / "labels" / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w_label-SC_seg.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    assert np.asarray(mask.dataobj).any()
    meta = json.loads((out / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.json").read_text())
    assert meta["SliceThickness"] == 3.0
    assert not (out / "sub-unf01").exists()
    assert sorted(p.stat().st_mtime_ns for p in ds_spine_mini.rglob("*") if p.is_file()) == before


def test_script_cuts_the_field_of_view_of_image_and_mask_alike(ds_spine_mini, tmp_path):
    out = tmp_path / "fov"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reacquire.py"), str(ds_spine_mini), str(out), "--participant-label",
         "sctLumbar", "--fov", "50", "78", "--thickness", "1.5", "--inplane", "1.5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    image = nib.load(out / "sub-sctLumbar" / "anat" / "sub-sctLumbar_T2w.nii.gz")
    source = nib.load(ds_spine_mini / "sub-sctLumbar" / "anat" / "sub-sctLumbar_T2w.nii.gz")
    assert image.shape[2] * 1.5 == pytest.approx(78.0, abs=1.5)
    bottom = apply_affine(image.affine, [0, 0, -0.5])[2] - apply_affine(source.affine, [0, 0, -0.5])[2]
    assert bottom == pytest.approx(50.0, abs=0.01)  # the stretch starts 50 mm above the source's bottom edge
    meta = json.loads((out / "sub-sctLumbar" / "anat" / "sub-sctLumbar_T2w.json").read_text())
    assert meta["ReacquiredFieldOfViewMm"] == [50.0, 78.0]


def test_a_field_of_view_outside_the_image_is_one_line_naming_it(ds_spine_mini, tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reacquire.py"), str(ds_spine_mini), str(tmp_path / "fov"),
         "--participant-label", "sctLumbar", "--fov", "500", "78"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "sub-sctLumbar_T2w.nii.gz: --fov no slice between 500 and 578 mm" in run.stderr.splitlines()[-1]
