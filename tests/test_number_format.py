"""Written numbers never carry a signed zero (``-0.000`` vs ``0.000`` broke a container CI run)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lumbo_bids.derivatives import atomic_write_json
from lumbo_bids.interfaces.preproc import Centerline, centerline_csv
from lumbo_bids.morphometry import cord_morphometrics, slices_tsv
from lumbo_bids.reports.group import write_group_summaries
from lumbo_bids.utils.numbers import dumps_json, format_float, unsigned_zeros

SIGNED_ZERO = re.compile(r"(?<![\w.])-0(\.0*)?(?![\d.eE])")  # -0, -0.0, -0.000 as a whole token


def signed_zero_tokens(text: str) -> list[str]:
    return [m.group(0) for m in SIGNED_ZERO.finditer(text)]


def test_the_pattern_finds_signed_zeros_only():
    assert signed_zero_tokens("1,-0.000,-0\t-0.0,x") == ["-0.000", "-0", "-0.0"]
    assert signed_zero_tokens("-0.001,-0.0005e3,-10.0,0.000,-00.5") == []


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [
        (-0.0, 3, "0.000"),
        (-0.0001, 3, "0.000"),
        (-0.0004999, 3, "0.000"),
        (-0.0005001, 3, "-0.001"),
        (0.0001, 3, "0.000"),
        (-1e-17, 4, "0.0000"),
        (-0.3, 0, "0"),
        (-1.5, 1, "-1.5"),
        (np.float32(-0.0), 3, "0.000"),
        (np.float64(-2e-5), 4, "0.0000"),
        (7, 2, "7.00"),
        (-math.inf, 3, "-inf"),
        (math.nan, 3, "nan"),
    ],
)
def test_format_float(value, decimals, text):
    assert format_float(value, decimals) == text


def test_centerline_csv_has_no_signed_zero(tmp_path):
    world = np.array([
        [-0.0, -0.0001, 12.3456],
        [-0.0004999, -0.0, -0.0],
        [-1e-15, 0.0, -0.0006],
        [-2.5, 3.25, -30.0],
    ])  # fmt: skip
    path = tmp_path / "centerline.csv"
    path.write_text(centerline_csv(world))
    text = path.read_text()
    assert signed_zero_tokens(text) == [] and "-0.000" not in text
    assert text.splitlines() == [
        "slice,x_mm,y_mm,z_mm",
        "0,0.000,0.000,12.346",
        "1,0.000,0.000,0.000",
        "2,0.000,0.000,-0.001",
        "3,-2.500,3.250,-30.000",
    ]


def test_centerline_interface_writes_no_signed_zero(tmp_path, monkeypatch):
    # cord centred on world x = y = 0 with a flipped x axis: the fitted centre is 10 + 1e-15
    # voxels, -4e-15 mm, which "%.3f" writes as "-0.000"
    mask = np.zeros((21, 21, 8), np.uint8)
    mask[8:13, 8:13, :] = 1
    affine = np.diag([-0.5, 0.5, 1.0, 1.0])
    affine[:3, 3] = [5.0, -5.0, 0.0]
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    monkeypatch.chdir(tmp_path)
    result = Centerline(mask_file=str(tmp_path / "mask.nii.gz")).run()
    lines = Path(result.outputs.centerline_csv).read_text().splitlines()
    assert signed_zero_tokens("\n".join(lines)) == [] and len(lines) == 9
    assert all(line.split(",")[1:3] == ["0.000", "0.000"] for line in lines[1:])


def test_morphometrics_tsv_has_no_signed_zero():
    x, y = np.meshgrid(np.arange(21) - 10.0, np.arange(21) - 10.0, indexing="ij")
    mask = np.repeat(((x**2 + y**2) <= 16)[..., None], 6, axis=2).astype(np.uint8)
    result = cord_morphometrics(mask, np.diag([0.7, 0.7, 1.0, 1.0]))
    result.slices[0].update(angle_deg=-1e-12, centroid_x_mm=-0.0, centroid_y_mm=-0.00004)
    text = slices_tsv(result)
    assert signed_zero_tokens(text) == [] and len(text.splitlines()) == 7
    row = dict(zip(text.splitlines()[0].split("\t"), text.splitlines()[1].split("\t"), strict=True))
    assert row["angle_deg"] == row["centroid_x_mm"] == row["centroid_y_mm"] == "0.0000"


def test_json_writers_turn_negative_zero_into_zero(tmp_path):
    data = {"a": -0.0, "b": [1.0, -0.0, {"c": (-0.0, 2)}], "d": "-0.0", "e": -1e-300, "f": False, "g": None}
    expected = {"a": 0.0, "b": [1.0, 0.0, {"c": [0.0, 2]}], "d": "-0.0", "e": -1e-300, "f": False, "g": None}
    assert unsigned_zeros(data) == expected
    assert math.copysign(1, unsigned_zeros(data)["a"]) == 1
    assert signed_zero_tokens(dumps_json({k: v for k, v in data.items() if k != "d"})) == []
    assert signed_zero_tokens(json.dumps(-0.0)) == ["-0.0"]  # what json writes without the helper
    path = atomic_write_json(tmp_path / "sidecar.json", {"ConusTip_mm": [round(-0.0001, 3), 1.0, -2.0]})
    assert signed_zero_tokens(path.read_text()) == []
    assert json.loads(path.read_text()) == {"ConusTip_mm": [0.0, 1.0, -2.0]}


def test_group_tables_have_no_signed_zero(tmp_path):
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    meta = {"CordVolume_mm3": 1.0, "CordLength_mm": 2.0, "MeanCSA_mm2": 3.0, "SlicesWithCord": 4,
            "ConusTip_mm": [-0.0, -0.00001, -1.0]}  # fmt: skip
    (anat / "sub-01_space-orig_label-SC_desc-T2w_morphometrics.json").write_text(json.dumps(meta))
    write_group_summaries(tmp_path)
    row = (tmp_path / "group" / "group_morphometrics.tsv").read_text().splitlines()[1]
    assert row.split("\t")[-3:] == ["0.0000", "0.0000", "-1.0000"]


def test_saved_images_always_state_their_units(tmp_path):
    """A source header without units (BIDS validator NIFTI_UNIT) gives outputs in mm and s."""
    from lumbo_bids.utils.images import save_image

    ref = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    ref.header.set_xyzt_units(xyz="unknown", t="unknown")
    out = nib.load(save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), tmp_path / "a.nii.gz", ref))
    assert out.header.get_xyzt_units() == ("mm", "sec")
    ref.header.set_xyzt_units(xyz="micron", t="msec")
    out = nib.load(save_image(np.ones((4, 4, 4), np.uint8), np.eye(4), tmp_path / "b.nii.gz", ref))
    assert out.header.get_xyzt_units() == ("micron", "msec")
