"""scripts/lumbar_check.py: extent, pieces and taper of a mask on an RPI grid (known answers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lumbar_check.py"
_spec = importlib.util.spec_from_file_location("lumbar_check", SCRIPT)
lumbar_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lumbar_check)


def test_profile_of_a_cord_ending_in_a_conus_with_a_root_below():
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # 1 x 1 x 2 mm voxels, RPI
    mask = np.zeros((30, 30, 60), dtype=np.uint8)
    xs, ys = np.mgrid[:30, :30]
    r2 = (xs - 15) ** 2 + (ys - 15) ** 2
    for z in range(20, 60):
        mask[:, :, z] = r2 <= (4.0 * min(1.0, (z - 19) / 10) ** 0.5) ** 2  # tapers over the lowest 20 mm
    prof = lumbar_check.profile(mask, affine)
    assert prof["pieces"] == 1 and prof["bottom_mm"] == 40.0 and prof["top_mm"] == 118.0
    assert prof["tapers"] and prof["field_of_view_mm"] == 120.0 and len(prof["csa_mm2"]) == 60
    assert abs(prof["csa_median_mm2"] - np.pi * 16) < 8
    mask[2:4, 2:4, 2:10] = 1  # a root apart from the cord, lower down
    prof = lumbar_check.profile(mask, affine)
    assert prof["pieces"] == 2 and prof["bottom_mm"] == 4.0
    assert lumbar_check.profile(np.zeros_like(mask), affine)["empty"]
