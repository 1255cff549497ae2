"""scripts/compare_derivatives.py on two small derivative folders made here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_derivatives.py"
_spec = importlib.util.spec_from_file_location("compare_derivatives", SCRIPT)
compare_derivatives = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_derivatives)

ANAT = Path("sub-01") / "anat"
IMAGE = ANAT / "sub-01_space-orig_desc-preproc_T2w.nii.gz"
MASK = ANAT / "sub-01_space-orig_label-SC_desc-T2w_mask.nii.gz"
CENTERLINE = ANAT / "sub-01_space-orig_desc-T2w_centerline.csv"
TABLE = ANAT / "sub-01_space-orig_label-SC_desc-T2w_morphometrics.tsv"
SIDECAR = ANAT / "sub-01_space-orig_label-SC_desc-T2w_morphometrics.json"


def _save(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0])), path)


def _edit_image(path: Path, change) -> None:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).copy()
    change(data)
    _save(path, data)


@pytest.fixture
def folders(tmp_path):
    """``reference`` and an identical copy ``other`` of a one-image derivative folder."""
    ref = tmp_path / "reference"
    (ref / ANAT).mkdir(parents=True)
    _save(ref / IMAGE, np.random.default_rng(0).normal(100, 20, (6, 6, 4)).astype(np.float32))
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[2:4, 2:4, :] = 1
    _save(ref / MASK, mask)
    (ref / CENTERLINE).write_text("slice,x_mm,y_mm,z_mm\n0,0.000,1.250,-3.000\n1,0.013,1.300,-2.000\n")
    (ref / TABLE).write_text("slice\tcsa_mm2\tangle_deg\n0\t12.3456\tn/a\n1\t80.0000\t3.5000\n")
    (ref / SIDECAR).write_text(json.dumps({
        "Sources": ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"],
        "CordVolume_mm3": 1234.567, "ConusTip_mm": [0.0, -1.5, -30.25], "SlicesWithCord": 2,
        "csa_mm2": {"Description": "Cross-sectional area", "Units": "mm^2"}, "RunID": "20261202-101010_run-1",
    }))  # fmt: skip
    (ref / "sub-01" / "log").mkdir()
    (ref / "sub-01" / "log" / "crash.txt").write_text("run 1")
    other = tmp_path / "other"
    shutil.copytree(ref, other)
    (other / "sub-01" / "log" / "crash.txt").write_text("run 2: logs are not compared")
    return ref, other


def run(ref: Path, other: Path, capsys, *options: str) -> tuple[int, str]:
    code = compare_derivatives.main([str(ref), str(other), *options])
    return code, capsys.readouterr().out


def test_identical_folders_agree(folders, capsys):
    code, out = run(*folders, capsys)
    assert code == 0 and "agree" in out and "DIFFERENT" not in out
    assert "largest tolerated difference: image values 0; mask voxels 0; table numbers 0; JSON numbers 0" in out


def test_tiny_differences_are_tolerated_and_reported(folders, capsys):
    ref, other = folders
    (other / CENTERLINE).write_text("slice,x_mm,y_mm,z_mm\n0,-0.000,1.250,-3.000\n1,0.013,1.300,-2.000\n")
    (other / TABLE).write_text("slice\tcsa_mm2\tangle_deg\n0\t12.3460\tn/a\n1\t80.0000\t3.5000\n")
    meta = json.loads((other / SIDECAR).read_text())
    meta["ConusTip_mm"][0] = -0.0
    meta["CordVolume_mm3"] = 1234.6  # |0.033| <= 1e-3 + 1e-4 * 1234.567
    meta["RunID"] = "20261202-111111_run-2"  # which run wrote it: never compared
    (other / SIDECAR).write_text(json.dumps(meta, indent=2))
    _edit_image(other / IMAGE, lambda data: data.__setitem__((1, 2, 3), data[1, 2, 3] + 5e-5))
    code, out = run(ref, other, capsys)
    assert code == 0 and "agree" in out, out
    summary = next(line for line in out.splitlines() if "largest tolerated difference" in line)
    assert f"table numbers 0.0004 ({TABLE})" in summary
    assert f"JSON numbers 0.033 ({SIDECAR})" in summary
    gap = np.abs(nib.load(other / IMAGE).get_fdata() - nib.load(ref / IMAGE).get_fdata()).max()
    assert 4e-5 < gap < 6e-5 and f"image values {gap:.3g} ({IMAGE})" in summary
    assert "mask voxels 0;" in summary


def _change_voxel(path: Path, value: float) -> None:
    _edit_image(path, lambda data: data.__setitem__((0, 0, 0), value))


FAILURES = {
    "one image voxel": (IMAGE, lambda p: _change_voxel(p, 7.0), "values differ"),
    "one mask voxel": (MASK, lambda p: _change_voxel(p, 1), "mask Dice"),
    "a table number": (TABLE, lambda p: p.write_text(p.read_text().replace("80.0000", "80.0200")), "row 2 csa_mm2"),
    "a centerline number": (CENTERLINE, lambda p: p.write_text(p.read_text().replace("0.013", "0.015")), "x_mm"),
    "a table text": (TABLE, lambda p: p.write_text(p.read_text().replace("n/a", "0.0000")), "angle_deg"),
    "a table row": (TABLE, lambda p: p.write_text(p.read_text() + "2\t1.0\t1.0\n"), "2 vs 3 rows"),
    "a column name": (TABLE, lambda p: p.write_text(p.read_text().replace("angle_deg", "angle")), "columns differ"),
    "a JSON number": (SIDECAR, lambda p: p.write_text(p.read_text().replace("-30.25", "-30.3")), "ConusTip_mm[2]"),
    "a JSON string": (SIDECAR, lambda p: p.write_text(p.read_text().replace("mm^2", "mm2")), "csa_mm2.Units"),
    "a JSON key": (SIDECAR, lambda p: p.write_text(p.read_text().replace("SlicesWithCord", "Slices")), "keys differ"),
    "a missing file": (TABLE, Path.unlink, "only in"),
}


@pytest.mark.parametrize("change", FAILURES, ids=list(FAILURES))
def test_real_differences_fail(folders, capsys, change):
    ref, other = folders
    rel, edit, message = FAILURES[change]
    edit(other / rel)
    code, out = run(ref, other, capsys)
    assert code == 1 and "differ (1 problem(s))" in out, out
    line = next(line for line in out.splitlines() if "DIFFERENT" in line)
    assert str(rel) in line and message in line, line


def test_tolerances_are_options(folders, capsys):
    ref, other = folders
    (other / TABLE).write_text((ref / TABLE).read_text().replace("80.0000", "80.5000"))
    assert run(ref, other, capsys)[0] == 1
    assert run(ref, other, capsys, "--atol", "0.5")[0] == 0
    assert run(ref, other, capsys, "--atol", "0", "--rtol", "0.01")[0] == 0
    _change_voxel(other / IMAGE, 1000.0)
    assert run(ref, other, capsys, "--atol", "0.5")[0] == 1
    assert run(ref, other, capsys, "--atol", "0.5", "--image-atol", "2000")[0] == 0


def test_command_line_exit_status(folders):
    ref, other = folders
    command = [sys.executable, str(SCRIPT), str(ref), str(other)]
    agree = subprocess.run(command, capture_output=True, text=True, check=False)
    assert agree.returncode == 0 and "agree" in agree.stdout, agree.stdout + agree.stderr
    (other / CENTERLINE).unlink()
    differ = subprocess.run(command, capture_output=True, text=True, check=False)
    assert differ.returncode == 1 and f"only in {ref}: {CENTERLINE}" in differ.stdout
