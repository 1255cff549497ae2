"""Intensity standardisation: robust per-image z-scoring, Nyúl & Udupa histogram matching.

Three methods, named in a model's plan (``preprocessing.intensity.method``) and applied by
:func:`apply_intensity`:

* ``robust`` (the shipped models): clip the image's own foreground to its 0.5-99.5
  percentiles, then z-score. It learns nothing from training images, so it cannot misplace
  an unseen sequence's histogram the way landmarks learned on other images do; the network is
  trained for it on intensity-randomised images (:mod:`lumbo_bids.training.augment`).
* ``nyul``: the deepseg_sc recipe below, kept for models trained with it.
* ``percentile``: foreground 1-99 percentiles to 0-1, then z-score.

The deepseg_sc recipe: learn, on training images, the mean position of a few
histogram percentiles (landmarks) on a standard scale; at inference map each
image's own landmarks onto those by a piecewise-linear, monotone function,
then z-score. Statistics are taken over the *foreground* (``mask``, or
``data > 0`` when no mask is given) so that zero padding added by crops or
resampling does not change what the network sees.

Reference: L. G. Nyúl, J. K. Udupa, X. Zhang, "New variants of a method of
MRI scale standardization", IEEE TMI 19(2), 2000.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_PERCENTILES: tuple[float, ...] = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
DEFAULT_SCALE: tuple[float, float] = (0.0, 100.0)


def foreground(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean foreground: ``mask > 0`` when given, else finite voxels ``> 0``."""
    data = np.asarray(data)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != data.shape:
            raise ValueError(f"mask shape {mask.shape} differs from data shape {data.shape}")
        return (mask > 0) & np.isfinite(data)
    return np.isfinite(data) & (data > 0)


def _foreground_values(data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    values = np.asarray(data)[foreground(data, mask)]
    if values.size == 0:
        raise ValueError("no foreground voxel (empty mask, or no value > 0)")
    return values


def image_landmarks(
    data: np.ndarray, mask: np.ndarray | None = None, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Intensity at each of ``percentiles`` of the foreground histogram.

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    mask : numpy.ndarray, optional
        Foreground mask; default: voxels ``> 0`` (ignores zero padding).
    percentiles : sequence of float
        Increasing percentiles in [0, 100].

    Returns
    -------
    numpy.ndarray
        float64 landmarks, non-decreasing.
    """
    perc = np.asarray(percentiles, dtype=np.float64)
    if perc.ndim != 1 or perc.size < 2 or np.any(np.diff(perc) <= 0) or perc[0] < 0 or perc[-1] > 100:
        raise ValueError(f"percentiles must increase within [0, 100], got {percentiles!r}")
    return np.percentile(_foreground_values(data, mask).astype(np.float64), perc)


def learn_standard_scale(landmarks_list: Sequence[np.ndarray], scale: tuple[float, float] = DEFAULT_SCALE) -> np.ndarray:
    """Nyúl training step: the mean of the images' landmarks once mapped onto ``scale``.

    Each image's landmarks are mapped linearly so that its lowest and highest
    landmarks land on ``scale``; the intermediate ones are averaged.

    Returns
    -------
    numpy.ndarray
        Standard landmarks; the first and last equal ``scale`` exactly.
    """
    if len(landmarks_list) == 0:
        raise ValueError("need the landmarks of at least one image")
    low, high = float(scale[0]), float(scale[1])
    if not high > low:
        raise ValueError(f"scale must be increasing, got {scale!r}")
    mapped = []
    for marks in landmarks_list:
        marks = np.asarray(marks, dtype=np.float64)
        span = marks[-1] - marks[0]
        if not span > 0:
            raise ValueError("an image has equal lowest and highest landmarks (constant image?)")
        mapped.append(low + (marks - marks[0]) / span * (high - low))
    standard = np.mean(mapped, axis=0)
    standard[0], standard[-1] = low, high
    return standard


def _strictly_increasing(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop landmarks equal to their predecessor (ties from flat histograms)."""
    keep = np.concatenate([[True], np.diff(source) > 0])
    return source[keep], target[keep]


def _piecewise_linear(data: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Monotone map: ``np.interp`` between landmarks, end segments prolonged outside."""
    out = np.interp(data, source, target).astype(np.float32)
    slope_low = (target[1] - target[0]) / (source[1] - source[0])
    slope_high = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below, above = data < source[0], data > source[-1]
    out[below] = target[0] + slope_low * (data[below] - source[0])
    out[above] = target[-1] + slope_high * (data[above] - source[-1])
    return out


def apply_standard_scale(
    data: np.ndarray,
    standard: Sequence[float],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Map the image's landmarks onto ``standard`` (piecewise linear, monotone).

    Every voxel (background included) goes through the same increasing map,
    so the output's foreground landmarks are ``standard``.

    Returns
    -------
    numpy.ndarray
        float32 array of ``data``'s shape.
    """
    data = np.asarray(data)
    standard = np.asarray(standard, dtype=np.float64)
    if standard.shape != (len(percentiles),) or np.any(np.diff(standard) < 0):
        raise ValueError("standard landmarks must be non-decreasing, one per percentile")
    marks = image_landmarks(data, mask, percentiles)
    if not marks[-1] > marks[0]:
        raise ValueError("the image's foreground is constant: its histogram cannot be standardised")
    source, target = _strictly_increasing(marks, standard)
    return _piecewise_linear(data.astype(np.float64), source, target)


def percentile_scale(data: np.ndarray, low: float = 1.0, high: float = 99.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Linear map sending the foreground ``low`` / ``high`` percentiles to 0 / 1 (not clipped).

    A constant foreground only gets shifted (to 0), never divided by zero.
    """
    p_low, p_high = np.percentile(_foreground_values(data, mask).astype(np.float64), [low, high])
    span = p_high - p_low if p_high > p_low else 1.0
    out = np.asarray(data, dtype=np.float32) - np.float32(p_low)
    out /= np.float32(span)
    return out


def zscore(data: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """``(data - mean) / max(std, eps)`` with statistics over ``mask > 0`` (default: all voxels).

    Statistics are accumulated in float64, the result is float32.
    """
    data = np.asarray(data)
    values = data if mask is None else data[foreground(data, mask)]
    if values.size == 0:
        raise ValueError("zscore: empty mask")
    mean, std = values.mean(dtype=np.float64), values.std(dtype=np.float64)
    out = np.asarray(data, dtype=np.float32) - np.float32(mean)
    out /= np.float32(max(float(std), eps))
    return out


def standardise(data: np.ndarray, landmarks: dict[str, Any] | None, mask: np.ndarray | None = None) -> np.ndarray:
    """What the network sees: Nyúl (or percentile fallback) then z-score, over the foreground.

    Parameters
    ----------
    data : numpy.ndarray
        Image (e.g. the cropped stack; zero padding is not foreground).
    landmarks : dict or None
        ``{"percentiles": [...], "standard": [...]}`` (other keys such as
        ``"method"`` are ignored) for Nyúl; None for the 1-99 percentile fallback.
    mask : numpy.ndarray, optional
        Foreground; default ``data > 0``.

    Returns
    -------
    numpy.ndarray
        float32, mean 0 and standard deviation 1 over the foreground.
    """
    fg = foreground(data, mask)
    if landmarks is None:
        scaled = percentile_scale(data, mask=fg)
    else:
        if "standard" not in landmarks:
            raise ValueError("Nyúl landmarks need a 'standard' list")
        percentiles = landmarks.get("percentiles", DEFAULT_PERCENTILES)
        scaled = apply_standard_scale(data, landmarks["standard"], percentiles, mask=fg)
    return zscore(scaled, mask=fg)


#: the methods :func:`apply_intensity` knows
METHODS: tuple[str, ...] = ("robust", "nyul", "percentile")
#: default clipping percentiles of the ``robust`` method
ROBUST_CLIP: tuple[float, float] = (0.5, 99.5)


def robust_standardise(data: np.ndarray, mask: np.ndarray | None = None, clip: Sequence[float] = ROBUST_CLIP) -> np.ndarray:
    """Clip to the foreground's ``clip`` percentiles, then z-score over the foreground.

    Depends on the image alone (no learned landmarks): any contrast, scanner or scaling comes
    out with foreground mean 0 and standard deviation 1, and a few very bright or dark voxels
    (fat, vessels, artefacts) cannot squeeze the rest of the histogram.

    Parameters
    ----------
    data : numpy.ndarray
        Image (e.g. the cropped stack; zero padding is not foreground).
    mask : numpy.ndarray, optional
        Foreground; default ``data > 0``.
    clip : sequence of float
        Lower and upper percentiles (0-100) of the foreground to clip to.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    fg = foreground(data, mask)
    lo, hi = np.percentile(_foreground_values(data, fg).astype(np.float64), [float(clip[0]), float(clip[1])])
    clipped = np.clip(np.asarray(data, dtype=np.float32), np.float32(lo), np.float32(hi))
    return zscore(clipped, mask=fg)


def apply_intensity(data: np.ndarray, plan: dict[str, Any] | None, mask: np.ndarray | None = None) -> np.ndarray:
    """Standardise ``data`` as a model's intensity plan says (the one place that dispatches).

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    plan : dict or None
        ``preprocessing.intensity`` of a model: ``{"method": "robust", "clip": [0.5, 99.5]}``,
        ``{"method": "nyul", "percentiles": [...], "standard": [...]}`` or
        ``{"method": "percentile"}``; None or ``{}`` means ``percentile``.
    mask : numpy.ndarray, optional
        Foreground; default ``data > 0``.

    Returns
    -------
    numpy.ndarray
        float32, mean 0 and standard deviation 1 over the foreground.
    """
    plan = plan or {}
    method = plan.get("method", "percentile")
    if method == "robust":
        return robust_standardise(data, mask, plan.get("clip", ROBUST_CLIP))
    if method == "nyul":
        return standardise(data, plan, mask)
    if method == "percentile":
        return standardise(data, None, mask)
    raise ValueError(f"unknown intensity method {method!r} (known: {', '.join(METHODS)})")
