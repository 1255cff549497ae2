"""Failure flags of one segmentation, from what the participant level already has (pure numpy/scipy).

Everything is measured on the network's grid: the per-slice crop around the centerline
(``(sx, sy, nz)``, isotropic ``resolution`` mm, axis 2 inferior -> superior), where the
centerline point of every slice is the crop's centre voxel ``(sx // 2, sy // 2)``. Inputs are
the cord probability, the post-processed binary mask, optionally the crop centres on the
resampled grid (the centerline's course, for the CSA's tilt correction), the cropped image
(to know how far the image has signal along z) and where the centerline was seen (the slices of
the manual mask it came from, or of the localiser's heat-map: how far the cord should reach).

:func:`qc_measures` returns named numbers; :func:`raised_flags` compares them with
:data:`FLAGS` (one table: flag, measure, threshold, one-line explanation). The thresholds are
calibrated on the shipped models' outputs on ds-spine-mini (``scripts/validate_flags.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Settings of the measures (not thresholds): plausible adult cord CSA along the whole cord
#: (C1-L1; enlargements reach ~90 mm^2, the thoracic cord ~40 mm^2), the length of the conus
#: taper exempt from the lower bound, the ring "around the mask" and the distance from the
#: centerline beyond which no voxel of cord can lie; below the mask's end, the tube around the
#: centerline and the probability that is "not clearly background"; at the end, what makes a neck
#: (a slice thinner than ``neck_share`` of a slice of at least ``neck_min_mm2`` below it, CSA
#: smoothed over ``neck_smooth_mm``, within the taper's ``taper_mm``).
SETTINGS = {
    "csa_min_mm2": 20.0,
    "csa_max_mm2": 120.0,
    "taper_mm": 20.0,
    "ring_mm": 1.0,
    "far_mm": 10.0,
    "signal_fraction": 0.1,
    "end_tube_mm": 4.0,
    "end_probability": 0.1,
    "neck_share": 0.5,
    "neck_min_mm2": 5.0,
    "neck_smooth_mm": 1.0,
}


@dataclass(frozen=True)
class Flag:
    """A failure flag: raised when ``measure`` is above (``above=True``) or below ``threshold``."""

    name: str
    measure: str
    threshold: float
    above: bool
    explanation: str

    def raised(self, measures: dict, threshold: float | None = None) -> bool:
        value = measures.get(self.measure)
        limit = self.threshold if threshold is None else threshold
        if value is None or not math.isfinite(value):
            return False
        return value > limit if self.above else value < limit


#: The flags, their measure and threshold: the one table (README "QC flags" prints it).
FLAGS = (
    Flag("empty_mask", "slices_with_cord", 1, False, "the mask has no cord at all"),
    Flag(
        "low_margin_in_mask", "margin_in_mask", 0.6, False,
        "the network is unsure under the mask (mean margin 2p - 1 over the mask's voxels)",
    ),
    Flag(
        "uncertain_around_mask", "entropy_around_mask", 0.7, True,
        "the network is unsure around the mask (mean binary entropy, bits, in the 1 mm ring outside it)",
    ),
    Flag(
        "mask_beyond_probability", "mask_low_probability_fraction", 0.1, True,
        "part of the mask lies where the network's probability is below 0.5",
    ),
    Flag(
        "probability_beyond_mask", "probability_outside_mask_fraction", 0.25, True,
        "part of what the network calls cord (probability > 0.5) is left out of the mask",
    ),
    Flag(
        "csa_out_of_range", "csa_out_of_range_fraction", 0.2, True,
        "too many slices with a CSA outside 20-120 mm^2 (the conus taper is exempt from the lower bound)",
    ),
    Flag("mask_breaks", "max_gap_mm", 3.0, True, "slices without cord between slices with cord (longest gap, mm)"),
    Flag(
        "cord_stops_short", "stop_short_mm", 6.0, True,
        "the mask stops before the cord does: length beyond its top, beyond its bottom where a manual mask goes on, "
        "or beyond an abrupt (not conus-tapered) bottom where the localiser saw the cord (mm)",
    ),
    Flag(
        "cord_end_uncertain", "end_uncertain_mm", 5.0, True,
        "the cord's lower end is unsure: the network still sees cord-like signal on the centerline below it, "
        "or the end is not a taper (a neck, with more below it), or the mask ends abruptly (not tapered) with image "
        "below it (mm)",
    ),
    Flag(
        "centerline_outside_mask", "centerline_outside_fraction", 0.25, True,
        "the centerline leaves the mask on too many of the mask's slices",
    ),
    Flag(
        "mask_far_from_centerline", "far_from_centerline_mm3", 10.0, True,
        "mask volume (mm^3) further than 10 mm from the centerline, where no cord can be",
    ),
)  # fmt: skip
#: Every measure of :func:`qc_measures`, in the order of the sidecar and of group/qc_flags.tsv.
MEASURES = (
    "slices_with_cord", "margin_in_mask", "entropy_around_mask", "mask_low_probability_fraction",
    "probability_outside_mask_fraction", "csa_median_mm2", "csa_out_of_range_fraction", "max_gap_mm", "n_gaps",
    "top_gap_mm", "bottom_gap_mm", "end_tapers", "stop_short_mm", "end_ambiguous_mm", "end_abrupt_mm",
    "end_necked_mm", "end_uncertain_mm", "centerline_outside_fraction", "far_from_centerline_mm3",
)  # fmt: skip
THRESHOLDS = {flag.name: flag.threshold for flag in FLAGS}
EXPLANATIONS = {flag.name: flag.explanation for flag in FLAGS}


def raised_flags(measures: dict, thresholds: dict | None = None) -> list[str]:
    """Names of the :data:`FLAGS` that ``measures`` raise (``thresholds`` overrides by flag name).

    Undefined measures (None, NaN) raise nothing: an empty mask raises ``empty_mask`` (and
    ``probability_beyond_mask`` if the network did see cord).
    """
    thresholds = thresholds or {}
    return [flag.name for flag in FLAGS if flag.raised(measures, thresholds.get(flag.name))]


# -- the measures ------------------------------------------------------------------------------
def binary_entropy(prob: np.ndarray) -> np.ndarray:
    """Entropy (bits) of a Bernoulli variable of probability ``prob``: 0 at 0 and 1, 1 at 0.5."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def probability_measures(prob: np.ndarray, mask: np.ndarray, resolution: float) -> dict[str, float]:
    """How sure the network is in and around the mask, and how the mask and the probability agree.

    ``margin_in_mask``: mean of ``2 p - 1`` over the mask (1: sure cord, -1: sure background);
    ``entropy_around_mask``: mean binary entropy in the ring of ``ring_mm`` outside the mask
    (a sharp, sure edge gives a low value); ``mask_low_probability_fraction``: share of mask
    voxels with probability < 0.5; ``probability_outside_mask_fraction``: share of the voxels
    with probability > 0.5 that are not in the mask.
    """
    prob, mask = np.asarray(prob, dtype=np.float64), np.asarray(mask) > 0
    confident = prob > 0.5
    outside = float((confident & ~mask).sum() / confident.sum()) if confident.any() else 0.0
    if not mask.any():
        return {"probability_outside_mask_fraction": outside}
    steps = max(1, round(SETTINGS["ring_mm"] / resolution))
    ring = ndimage.binary_dilation(mask, iterations=steps) & ~mask
    return {
        "margin_in_mask": float(np.mean(2.0 * prob[mask] - 1.0)),
        "entropy_around_mask": float(binary_entropy(prob[ring]).mean()) if ring.any() else math.nan,
        "mask_low_probability_fraction": float((prob[mask] < 0.5).mean()),
        "probability_outside_mask_fraction": outside,
    }


def slice_csa(mask: np.ndarray, resolution: float, centers: np.ndarray | None = None) -> np.ndarray:
    """Cross-sectional area (mm^2) of every axial slice of the crop, tilt-corrected.

    ``centers``: ``(nz, 2)`` crop centres on the resampled grid (the centerline's course, in
    voxels of ``resolution``), smoothed over 5 mm; the area is multiplied by the cosine of the
    angle between the centerline and the slice normal. None: no correction.
    """
    area = (np.asarray(mask) > 0).sum(axis=(0, 1)).astype(np.float64) * resolution**2
    if centers is None or len(centers) < 2:
        return area
    width = max(1, round(5.0 / resolution))
    smooth = ndimage.uniform_filter1d(np.asarray(centers, dtype=np.float64), width, axis=0, mode="nearest")
    slope = np.gradient(smooth, axis=0)  # in-plane voxels per slice, same voxel size in z
    return area / np.sqrt(1.0 + (slope**2).sum(axis=1))


def _gaps(has_cord: np.ndarray) -> list[int]:
    """Lengths (slices) of the runs without cord between the first and last slice with cord."""
    z = np.flatnonzero(has_cord)
    return [int(b - a - 1) for a, b in zip(z[:-1], z[1:]) if b - a > 1]


def _short_of(ends: np.ndarray, support: np.ndarray | None, imaged: np.ndarray) -> int:
    """Slices beyond one end of the mask (``ends``: the slices past it, nearest first) that
    should have cord: those with centerline evidence when there is any, else every imaged one."""
    wanted = imaged[ends] if support is None else (support[ends] & imaged[ends])
    return int(wanted.sum())


def extent_measures(
    csa: np.ndarray,
    resolution: float,
    signal: np.ndarray | None = None,
    support: np.ndarray | None = None,
    manual_support: bool = False,
) -> dict[str, float]:
    """Breaks along z, the CSA's plausibility, and whether the mask stops short of the cord.

    ``signal``: per slice, whether the image has signal there (default: every slice), so that a
    mask is not asked to reach slices outside the imaged volume. ``support``: per slice, whether
    the centerline was seen there (the manual mask it came from, or the localiser's heat-map
    on the centerline); without it every imaged slice counts. ``top_gap_mm``/``bottom_gap_mm``:
    length beyond the mask's ends that should have cord. A mask whose lowest 2 mm are below half
    its median CSA ends in a conus taper: its last ``taper_mm`` are exempt from the CSA lower
    bound, and when the support is the localiser's (which follows the canal down the cauda equina)
    its bottom gap is legitimate (``stop_short_mm`` ignores it). With ``manual_support`` (the
    support is a manual mask: an expert drew cord there) a taper that ends above the manual mask's
    end is short too: the conus went on below it.
    """
    has_cord = csa > 0
    z = np.flatnonzero(has_cord)
    imaged = np.ones(csa.size, dtype=bool) if signal is None else np.asarray(signal, dtype=bool)
    support = None if support is None else np.asarray(support, dtype=bool)
    top_gap = _short_of(np.arange(z[-1] + 1, csa.size), support, imaged) * resolution
    bottom_gap = _short_of(np.arange(z[0] - 1, -1, -1), support, imaged) * resolution
    median = float(np.median(csa[z]))
    tapered = bool(np.mean(csa[z[0] : z[0] + max(1, round(2.0 / resolution))]) < 0.5 * median)
    exempt = (z - z[0]) * resolution < SETTINGS["taper_mm"] if tapered else np.zeros(z.size, dtype=bool)
    values = csa[z]
    outside = ((values < SETTINGS["csa_min_mm2"]) & ~exempt) | (values > SETTINGS["csa_max_mm2"])
    gaps = _gaps(has_cord)
    return {
        "slices_with_cord": int(z.size),
        "csa_median_mm2": median,
        "csa_out_of_range_fraction": float(outside.mean()),
        "max_gap_mm": max(gaps, default=0) * resolution,
        "n_gaps": len(gaps),
        "top_gap_mm": top_gap,
        "bottom_gap_mm": bottom_gap,
        "end_tapers": float(tapered),
        "stop_short_mm": max(top_gap, 0.0 if tapered and not manual_support else bottom_gap),
    }


def _leading_run(flags: np.ndarray) -> int:
    """Length of the run of True values at the start of ``flags``."""
    return int(np.argmin(flags)) if not flags.all() else int(flags.size)


def necked_length(csa: np.ndarray, resolution: float) -> float:
    """Length (mm) of the mask's lower end that is not a taper: from its lowest slice up to where
    the cord is again as wide as the widest slice below a neck (0 when there is none).

    A conus narrows to its tip, so going up from the tip the cross-section does not shrink. Within
    the lowest ``taper_mm``, a slice thinner than ``neck_share`` of a slice of at least
    ``neck_min_mm2`` below it (CSA smoothed over ``neck_smooth_mm``) is a neck: what hangs below
    it is another structure joined by a thin bridge (a root bundle beside the conus, the cauda
    equina), or a conus that the mask lost on the way down.
    """
    z = np.flatnonzero(csa > 0)
    end = np.asarray(csa[z[0] : z[0] + max(1, round(SETTINGS["taper_mm"] / resolution))], dtype=np.float64)
    smooth = ndimage.uniform_filter1d(end, max(1, round(SETTINGS["neck_smooth_mm"] / resolution)), mode="nearest")
    widest_below = np.maximum.accumulate(smooth)
    neck = (smooth < SETTINGS["neck_share"] * widest_below) & (widest_below >= SETTINGS["neck_min_mm2"])
    if not neck.any():
        return 0.0
    first = int(np.argmax(neck))
    recovered = np.flatnonzero(smooth[first:] >= widest_below[first])
    return (first + int(recovered[0]) if recovered.size else smooth.size) * resolution


def _axis_distance_mm(shape: tuple[int, ...], resolution: float) -> np.ndarray:
    """In-plane distance (mm) of every voxel column from the crop's central axis (the centerline)."""
    xs = (np.arange(shape[0]) - shape[0] // 2)[:, None] * resolution
    ys = (np.arange(shape[1]) - shape[1] // 2)[None, :] * resolution
    return np.sqrt(xs**2 + ys**2)


def end_measures(
    prob: np.ndarray, mask: np.ndarray, resolution: float, signal: np.ndarray | None, tapered: bool, csa: np.ndarray
) -> dict[str, float]:
    """How sure the mask's lower end is (a conus inside the field of view, or a cord cut short).

    Below the mask's lowest slice, on the imaged slices nearest first: ``end_ambiguous_mm`` is the
    length over which the network's probability within ``end_tube_mm`` of the centerline stays
    above ``end_probability`` (it still sees something cord-like there: a faint conus, or roots it
    nearly took for cord); ``end_abrupt_mm`` is the imaged length below an end that does not taper
    (a cord does not stop at full width). At the end itself, ``end_necked_mm`` is the length that
    is not a taper (:func:`necked_length` of the slices' CSA ``csa``). ``end_uncertain_mm`` is the
    largest of the three. A mask that reaches the bottom of the imaged volume has a certain end (0).
    """
    z_cord = np.flatnonzero(mask.any(axis=(0, 1)))
    imaged = np.ones(mask.shape[2], dtype=bool) if signal is None else np.asarray(signal, dtype=bool)
    below = np.arange(int(z_cord[0]) - 1, -1, -1)
    below = below[: _leading_run(imaged[below])]  # the imaged run
    tube = _axis_distance_mm(mask.shape, resolution) <= SETTINGS["end_tube_mm"]
    seen = prob[tube, :].max(axis=0)[below] > SETTINGS["end_probability"]
    ambiguous = _leading_run(seen) * resolution
    abrupt = 0.0 if tapered else below.size * resolution
    necked = necked_length(csa, resolution) if below.size else 0.0  # no end in view: nothing below it
    return {
        "end_ambiguous_mm": ambiguous,
        "end_abrupt_mm": abrupt,
        "end_necked_mm": necked,
        "end_uncertain_mm": max(ambiguous, abrupt, necked),
    }


def support_from_heatmap(heat_stack: np.ndarray, resolution: float, radius_mm: float = 5.0) -> np.ndarray:
    """Per slice, whether the localiser's heat-map (cropped like the image) exceeds 0.5 within
    ``radius_mm`` of the centerline: the slices where the localiser saw the cord."""
    heat = np.asarray(heat_stack, dtype=np.float64)
    near = _axis_distance_mm(heat.shape, resolution) <= radius_mm
    return heat[near, :].max(axis=0) > 0.5


def centerline_measures(mask: np.ndarray, resolution: float) -> dict[str, float]:
    """How the mask sits on the centerline (the crop's central axis).

    ``centerline_outside_fraction``: share of the slices with cord whose centerline voxel is
    outside the mask; ``far_from_centerline_fraction``: share of mask voxels further than
    ``far_mm`` in-plane from the centerline (``far_from_centerline_mm3``: their volume).
    """
    mask = np.asarray(mask) > 0
    sx, sy, _ = mask.shape
    has_cord = mask.any(axis=(0, 1))
    outside = ~mask[sx // 2, sy // 2, :] & has_cord
    far = _axis_distance_mm(mask.shape, resolution) > SETTINGS["far_mm"]
    return {
        "centerline_outside_fraction": float(outside.sum() / has_cord.sum()),
        "far_from_centerline_mm3": float(mask[far, :].sum()) * resolution**3,
    }


def signal_slices(image: np.ndarray) -> np.ndarray:
    """Slices of the cropped image with signal: mean |intensity| above ``signal_fraction`` of
    the median slice's (zero-filled or blank slices at the ends of the volume are not imaged)."""
    means = np.abs(np.asarray(image, dtype=np.float64)).mean(axis=(0, 1))
    reference = float(np.median(means))
    return means > SETTINGS["signal_fraction"] * reference if reference > 0 else np.ones(means.size, dtype=bool)


def qc_measures(
    prob: np.ndarray,
    mask: np.ndarray,
    resolution: float,
    centers: np.ndarray | None = None,
    image: np.ndarray | None = None,
    support: np.ndarray | None = None,
    manual_support: bool = False,
) -> dict[str, float]:
    """Every measure the flags read, of one segmentation on the crop grid.

    Parameters
    ----------
    prob : np.ndarray
        ``(sx, sy, nz)`` cord probability in [0, 1].
    mask : np.ndarray
        Binary mask, same shape (the post-processed segmentation).
    resolution : float
        Isotropic voxel size (mm).
    centers : np.ndarray, optional
        ``(nz, 2)`` crop centres on the resampled grid (tilt correction of the CSA).
    image : np.ndarray, optional
        The cropped image, same shape (which slices have signal).
    support : np.ndarray, optional
        ``(nz,)`` bool: slices where the centerline was seen (the manual mask's slices, or
        :func:`support_from_heatmap`); None: every imaged slice should have cord.
    manual_support : bool
        ``support`` is a manual mask's slices: a tapered end above its end is short too
        (:func:`extent_measures`).

    Returns
    -------
    dict
        :data:`MEASURES` -> float, in that order (NaN: undefined). An empty mask gives
        ``slices_with_cord = 0`` and NaN for what needs cord.
    """
    prob, mask = np.asarray(prob, dtype=np.float64), np.asarray(mask) > 0
    if prob.shape != mask.shape or mask.ndim != 3:
        raise ValueError(f"probability {prob.shape} and mask {mask.shape} must be the same 3D shape")
    measures = probability_measures(prob, mask, resolution)
    if mask.any():
        signal = None if image is None else signal_slices(image)
        csa = slice_csa(mask, resolution, centers)
        measures.update(extent_measures(csa, resolution, signal, support, manual_support))
        measures.update(end_measures(prob, mask, resolution, signal, bool(measures["end_tapers"]), csa))
        measures.update(centerline_measures(mask, resolution))
    else:
        measures["slices_with_cord"] = 0
    return {name: measures.get(name, math.nan) for name in MEASURES}


def rounded(measures: dict, decimals: int = 4) -> dict[str, float | None]:
    """Measures as the sidecar writes them: rounded, None (JSON null) when undefined."""

    def value(v):
        if isinstance(v, (int, np.integer)):
            return int(v)
        return round(float(v), decimals) if math.isfinite(float(v)) else None

    return {name: value(v) for name, v in measures.items()}
