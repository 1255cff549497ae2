"""Cord morphometrics from a binary mask (pure numpy/nibabel/scipy), as ``sct_process_segmentation``.

Per axial slice: cross-sectional area corrected for the angle between the cord centerline and
the slice normal, in-plane diameters (right-left and antero-posterior, from the second moments
of the cross-section, tilt-corrected) and the centroid in world coordinates. Per image: cord
volume, length along the centerline and the **conus medullaris tip**, the most inferior point of
the cord along its centerline.

Slices are those of the mask's own grid reoriented exactly (no interpolation) to SCT "RPI"
(nibabel ``LAS``): axis 2 runs inferior -> superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage

from .centerline import DEFAULT_DEGREE, fit_centerline
from .geometry import RPI, reorient
from .utils.numbers import format_float

#: Columns of the per-slice table, with their units (the TSV sidecar describes them).
SLICE_COLUMNS = {
    "slice": ("Index of the axial slice on the RPI-reoriented native grid (0 = most inferior).", None),
    "csa_mm2": ("Cross-sectional area, corrected for the centerline's angle to the slice normal.", "mm^2"),
    "area_mm2": ("Area of the cord in the axial slice, uncorrected.", "mm^2"),
    "angle_deg": ("Angle between the centerline and the slice normal.", "degree"),
    "diameter_rl_mm": ("Right-left diameter (4 sqrt of the second moment), tilt-corrected.", "mm"),
    "diameter_ap_mm": ("Antero-posterior diameter (4 sqrt of the second moment), tilt-corrected.", "mm"),
    "centroid_x_mm": ("Centroid of the cross-section, scanner x (world) coordinate.", "mm"),
    "centroid_y_mm": ("Centroid of the cross-section, scanner y (world) coordinate.", "mm"),
    "centroid_z_mm": ("Centroid of the cross-section, scanner z (world) coordinate.", "mm"),
}


#: Columns that need the centerline's direction, undefined on an image of one axial slice.
DIRECTIONAL_COLUMNS = ("csa_mm2", "angle_deg", "diameter_rl_mm", "diameter_ap_mm")
ONE_SLICE_WARNING = (
    "one axial slice: the cord's direction is unknown, so the angle-corrected CSA, the angle, the "
    "diameters, the length and the conus tip are n/a (area_mm2 is the uncorrected area)"
)


def _rounded(value: float) -> float | None:
    """``value`` to 3 decimals; None (JSON null, "n/a") when it is undefined (NaN)."""
    return round(float(value), 3) if np.isfinite(value) else None


@dataclass(frozen=True)
class Morphometrics:
    """Per-slice table (one dict per slice with cord) and per-image summary (NaN: undefined)."""

    slices: list[dict]
    volume_mm3: float
    length_mm: float
    conus_tip_mm: tuple[float, float, float] | None
    mean_csa_mm2: float
    warning: str | None = None

    def summary(self) -> dict:
        summary = {
            "CordVolume_mm3": _rounded(self.volume_mm3),
            "CordLength_mm": _rounded(self.length_mm),
            "ConusTip_mm": None if self.conus_tip_mm is None else [round(v, 3) for v in self.conus_tip_mm],
            "MeanCSA_mm2": _rounded(self.mean_csa_mm2),
            "SlicesWithCord": len(self.slices),
        }
        if self.warning:
            summary["MorphometricsWarning"] = self.warning
        return summary


def cord_morphometrics(mask: np.ndarray, affine: np.ndarray, degree: int = DEFAULT_DEGREE) -> Morphometrics:
    """Morphometrics of the cord ``mask`` (non-zero = cord) on the grid ``affine``.

    The centerline is the per-slice centre of mass smoothed by :func:`fit_centerline`
    (polynomial in z, as SCT); its tangent gives each slice's angle.
    """
    data, rpi_affine = reorient((np.asarray(mask) > 0).astype(np.uint8), np.asarray(affine, dtype=float), RPI)
    cols = rpi_affine[:3, :3]
    zooms = np.linalg.norm(cols, axis=0)
    normal = np.cross(cols[:, 0], cols[:, 1])
    pixel_area = float(np.linalg.norm(normal))
    normal /= pixel_area
    voxel_volume = abs(float(np.linalg.det(cols)))
    nz = data.shape[2]
    z = np.flatnonzero(data.any(axis=(0, 1)))
    if z.size == 0:
        return Morphometrics([], 0.0, 0.0, None, float("nan"))
    if nz == 1:
        return _one_slice_morphometrics(data, rpi_affine, pixel_area, voxel_volume)
    xy = np.array([ndimage.center_of_mass(data[:, :, k]) for k in z])
    fitted = fit_centerline(z, xy, nz, degree=degree, extend=True)
    curve_vox = np.column_stack([fitted, np.arange(nz, dtype=float)])
    curve_world = apply_affine(rpi_affine, curve_vox)
    tangent_world = np.gradient(curve_world, axis=0)
    tangent_img = np.gradient(curve_vox, axis=0) * zooms  # mm per slice along each image axis
    rows = [
        _slice_row(data[:, :, k] > 0, k, (cx, cy), tangent_world[k], tangent_img[k], normal, zooms, pixel_area, rpi_affine)
        for k, (cx, cy) in zip(z, xy)
    ]
    span = curve_world[z[0] : z[-1] + 1]
    length = float(np.linalg.norm(np.diff(span, axis=0), axis=1).sum())  # first to last slice centre
    tip = tuple(float(v) for v in curve_world[z[0]])
    return Morphometrics(
        slices=rows,
        volume_mm3=float(data.sum()) * voxel_volume,
        length_mm=length,
        conus_tip_mm=tip,
        mean_csa_mm2=float(np.mean([r["csa_mm2"] for r in rows])),
    )


def _slice_row(
    section: np.ndarray,
    k: int,
    centre: tuple[float, float],
    tangent_world: np.ndarray,
    tangent_img: np.ndarray,
    normal: np.ndarray,
    zooms: np.ndarray,
    pixel_area: float,
    rpi_affine: np.ndarray,
) -> dict:
    """The :data:`SLICE_COLUMNS` of axial slice ``k`` (``section``: its cord voxels, ``centre``: their
    centre of mass) given the centerline's tangent there, in world mm and in mm along the image axes;
    ``normal`` is the unit slice normal, ``zooms`` and ``pixel_area`` those of the RPI grid."""
    t = tangent_world / np.linalg.norm(tangent_world)
    cos_angle = min(1.0, abs(float(t @ normal)))
    area = float(section.sum()) * pixel_area
    ix, iy = np.nonzero(section)
    tx, ty, tz = tangent_img
    cos_x = abs(tz) / np.hypot(tx, tz)  # a slice stretches a tilted cord by 1/cos
    cos_y = abs(tz) / np.hypot(ty, tz)
    rl = 4.0 * np.sqrt(np.var(ix * zooms[0]) + zooms[0] ** 2 / 12) * cos_x
    ap = 4.0 * np.sqrt(np.var(iy * zooms[1]) + zooms[1] ** 2 / 12) * cos_y
    centroid = apply_affine(rpi_affine, (*centre, k))
    return {
        "slice": int(k),
        "csa_mm2": area * cos_angle,
        "area_mm2": area,
        "angle_deg": float(np.degrees(np.arccos(cos_angle))),
        "diameter_rl_mm": float(rl),
        "diameter_ap_mm": float(ap),
        "centroid_x_mm": float(centroid[0]),
        "centroid_y_mm": float(centroid[1]),
        "centroid_z_mm": float(centroid[2]),
    }


def _one_slice_morphometrics(data: np.ndarray, rpi_affine: np.ndarray, pixel_area: float, voxel_volume: float) -> Morphometrics:
    """An image of one axial slice: its area and centroid; what needs the cord's direction is NaN."""
    section = data[:, :, 0] > 0
    centroid = apply_affine(rpi_affine, (*ndimage.center_of_mass(section), 0))
    row = {
        "slice": 0,
        "area_mm2": float(section.sum()) * pixel_area,
        **{name: float("nan") for name in DIRECTIONAL_COLUMNS},
        **{f"centroid_{axis}_mm": float(v) for axis, v in zip("xyz", centroid)},
    }
    return Morphometrics(
        slices=[{name: row[name] for name in SLICE_COLUMNS}],
        volume_mm3=float(data.sum()) * voxel_volume,
        length_mm=float("nan"),
        conus_tip_mm=None,
        mean_csa_mm2=float("nan"),
        warning=ONE_SLICE_WARNING,
    )


def _cell(value: float) -> str:
    return format_float(value, 4) if np.isfinite(value) else "n/a"


def slices_tsv(result: Morphometrics) -> str:
    """The per-slice table as TSV text (``n/a`` for missing values, as BIDS asks; no ``-0.0000``)."""
    header = "\t".join(SLICE_COLUMNS)
    lines = [header]
    for row in result.slices:
        lines.append("\t".join(str(row[c]) if c == "slice" else _cell(row[c]) for c in SLICE_COLUMNS))
    return "\n".join(lines) + "\n"


def columns_sidecar() -> dict:
    """BIDS TSV sidecar describing :data:`SLICE_COLUMNS`."""
    return {name: {"Description": text, **({"Units": units} if units else {})} for name, (text, units) in SLICE_COLUMNS.items()}
