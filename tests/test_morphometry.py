"""Morphometrics on synthetic cords whose answers are known analytically."""

from __future__ import annotations

import numpy as np
import pytest

from lumbo_bids.morphometry import cord_morphometrics, slices_tsv

VOX = 0.25  # mm


def tilted_elliptic_cylinder(a: float, b: float, tilt_deg: float, shape=(96, 80, 120), z_end: int | None = None):
    """Elliptic cylinder (semi-axes ``a`` across the tilt plane's normal... see below) in mm.

    The axis is tilted by ``tilt_deg`` in the x-z plane; the cross-section perpendicular to the
    axis is an ellipse with semi-axis ``a`` in the x-z plane and ``b`` along y. Voxels are
    ``VOX`` mm, RAS-aligned affine (already RPI = LAS after a flip of x, handled by reorient).
    """
    t = np.radians(tilt_deg)
    axis = np.array([np.sin(t), 0.0, np.cos(t)])
    e1 = np.array([np.cos(t), 0.0, -np.sin(t)])
    idx = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    p = (idx - centre[:, None, None, None]) * VOX
    u = np.tensordot(e1, p, axes=1)
    v = p[1]
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if z_end is not None:
        mask[:, :, :z_end] = False
    affine = np.diag([VOX, VOX, VOX, 1.0])
    affine[:3, 3] = [-10.0, 5.0, -20.0]
    return mask.astype(np.uint8), affine, axis


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_csa_of_tilted_elliptic_cylinder_within_2_percent(tilt):
    a, b = 4.0, 3.0
    mask, affine, _ = tilted_elliptic_cylinder(a, b, tilt)
    result = cord_morphometrics(mask, affine)
    inner = [r for r in result.slices if 20 <= r["slice"] < 100]  # away from the box's ends
    csa = np.array([r["csa_mm2"] for r in inner])
    expected = np.pi * a * b
    assert abs(np.median(csa) - expected) / expected < 0.02, (np.median(csa), expected)
    angle = np.median([r["angle_deg"] for r in inner])
    assert abs(angle - tilt) < 1.0
    # diameters: tilt-corrected right-left = 2a, antero-posterior = 2b
    assert abs(np.median([r["diameter_rl_mm"] for r in inner]) - 2 * a) / (2 * a) < 0.03
    assert abs(np.median([r["diameter_ap_mm"] for r in inner]) - 2 * b) / (2 * b) < 0.03
    if tilt:  # the uncorrected area of a tilted cut is larger by 1 / cos
        area = np.median([r["area_mm2"] for r in inner])
        assert abs(area * np.cos(np.radians(tilt)) - expected) / expected < 0.02


def test_conus_tip_of_a_cord_ending_at_a_known_slice():
    mask, affine, _ = tilted_elliptic_cylinder(3.0, 3.0, 0.0, shape=(64, 64, 100), z_end=37)
    result = cord_morphometrics(mask, affine)
    tip = np.array(result.conus_tip_mm)
    expected = affine @ np.array([31.5, 31.5, 37, 1.0])
    assert np.all(np.abs(tip - expected[:3]) <= VOX + 1e-6), (tip, expected)
    assert result.slices[0]["slice"] == 37
    assert result.length_mm == pytest.approx((99 - 37) * VOX, rel=1e-3)
    assert result.volume_mm3 == pytest.approx(mask.sum() * VOX**3)


def test_conus_tip_is_found_whatever_the_storage_orientation():
    """Same cord stored flipped along z (an 'SPI'-like storage order): same world tip."""
    mask, affine, _ = tilted_elliptic_cylinder(3.0, 3.0, 0.0, shape=(64, 64, 100), z_end=37)
    flipped = mask[:, :, ::-1]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, 99
    a = cord_morphometrics(mask, affine)
    b = cord_morphometrics(flipped, affine @ flip)
    np.testing.assert_allclose(a.conus_tip_mm, b.conus_tip_mm, atol=1e-6)
    np.testing.assert_allclose(a.length_mm, b.length_mm)


def test_empty_mask_and_tsv():
    result = cord_morphometrics(np.zeros((8, 8, 8), np.uint8), np.eye(4))
    assert result.slices == [] and result.conus_tip_mm is None and result.volume_mm3 == 0
    mask, affine, _ = tilted_elliptic_cylinder(2.0, 2.0, 0.0, shape=(32, 32, 10))
    lines = slices_tsv(cord_morphometrics(mask, affine)).splitlines()
    assert lines[0].split("\t")[:2] == ["slice", "csa_mm2"] and len(lines) == 11


def test_single_axial_slice_measures_what_it_can():
    """One axial slice: area and centroid; what needs the cord's direction is n/a, not an error."""
    mask, affine, _ = tilted_elliptic_cylinder(3.0, 2.0, 0.0, shape=(64, 64, 1))
    result = cord_morphometrics(mask, affine)
    (row,) = result.slices
    assert row["area_mm2"] == pytest.approx(mask.sum() * VOX**2)
    assert row["centroid_z_mm"] == pytest.approx(affine[2, 3])
    summary = result.summary()
    assert summary["CordVolume_mm3"] == pytest.approx(mask.sum() * VOX**3, abs=1e-3)
    assert summary["CordLength_mm"] is None and summary["MeanCSA_mm2"] is None and summary["ConusTip_mm"] is None
    assert "one axial slice" in summary["MorphometricsWarning"]
    header, values = slices_tsv(result).splitlines()
    cells = dict(zip(header.split("\t"), values.split("\t")))
    assert [cells[c] for c in ("csa_mm2", "angle_deg", "diameter_rl_mm", "diameter_ap_mm")] == ["n/a"] * 4
    assert (
        "MorphometricsWarning"
        not in cord_morphometrics(*tilted_elliptic_cylinder(3.0, 2.0, 0.0, shape=(32, 32, 4))[:2]).summary()
    )
