"""Simulated acquisitions for domain randomisation (:mod:`lumbo_bids.training.augment`): contrast
look-up tables, partial-volume resolution along any axis (Gaussian or box slice profile), bias
fields and Gibbs ringing, on numpy arrays."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def unit_range(image: np.ndarray) -> np.ndarray:
    """The image's 0.5-99.5 percentile range mapped to [0, 1] (clipped)."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    if not hi > lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def random_lut(unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random piecewise-linear, generally non-monotonic map of [0, 1] onto [0, 1]."""
    n = int(rng.integers(3, 8))
    return np.interp(unit, np.linspace(0.0, 1.0, n), rng.uniform(0.0, 1.0, n)).astype(np.float32)


def box_kernel(width: float) -> np.ndarray:
    """A normalised box of ``width`` voxels (fractional ends weighted), odd length, centred."""
    half = width / 2.0
    reach = int(np.ceil(half - 0.5))
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    weights = np.clip(half + 0.5 - np.abs(offsets), 0.0, 1.0)
    return weights / weights.sum()


def simulate_resolution(image: np.ndarray, factors: tuple[float, ...], profile: str = "gaussian") -> np.ndarray:
    """Partial-volume acquisition at ``factors`` times the voxel size, back on the same grid.

    Along each axis with a factor ``f > 1``: a slice profile of width ``f`` voxels (``"gaussian"``:
    FWHM ``f``; ``"box"``: the mean over ``f`` voxels, as a 2D TSE slice), sampling every ``f``
    voxels, then linear interpolation back to every voxel.
    """
    if profile not in ("gaussian", "box"):
        raise ValueError(f"profile must be 'gaussian' or 'box', got {profile!r}")
    out = image.astype(np.float32, copy=True)
    for axis, f in enumerate(factors):
        n = out.shape[axis]
        if f <= 1.05 or n < 3:
            continue
        if profile == "box":
            out = ndimage.convolve1d(out, box_kernel(f).astype(np.float32), axis=axis, mode="nearest")
        else:
            out = ndimage.gaussian_filter1d(out, sigma=f / 2.3548, axis=axis, mode="nearest")
        positions = np.arange(0.0, n - 1 + 1e-6, f)
        if positions[-1] < n - 1:
            positions = np.append(positions, n - 1)
        samples = np.take(out, np.rint(positions).astype(int), axis=axis)
        out = interpolate_samples(samples, positions, n, axis)
    return out.astype(np.float32)


def interpolate_samples(samples: np.ndarray, positions: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from ``samples`` taken at (increasing, fractional)
    voxel ``positions`` back to every voxel ``0 .. n-1``, held constant beyond the first and last."""
    index = np.interp(np.arange(n), positions, np.arange(positions.size))
    lo = np.floor(index).astype(int)
    hi = np.minimum(lo + 1, positions.size - 1)
    shape = [1] * samples.ndim
    shape[axis] = n
    w = (index - lo).astype(np.float32).reshape(shape)
    return np.take(samples, lo, axis=axis) * (1 - w) + np.take(samples, hi, axis=axis) * w


def bias_field(shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``exp(g)``, ``g`` a cubic upsampling of a 4^n normal grid."""
    coarse = rng.normal(0.0, std, size=(4,) * len(shape))
    g = ndimage.zoom(coarse, [n / 4.0 for n in shape], order=3, mode="nearest", grid_mode=True)
    g = g[tuple(slice(0, n) for n in shape)]
    pad = [(0, n - m) for n, m in zip(shape, g.shape)]
    return np.exp(np.pad(g, pad, mode="edge")).astype(np.float32)


def gibbs_ringing(image: np.ndarray, axis: int, keep: float) -> np.ndarray:
    """Keep the central ``keep`` fraction of k-space along ``axis`` (truncation ringing)."""
    spectrum = np.fft.fftshift(np.fft.fft(image, axis=axis), axes=axis)
    n = image.shape[axis]
    half = max(1, int(round(keep * n / 2)))
    window = np.zeros(n)
    window[max(0, n // 2 - half) : n // 2 + half] = 1.0
    shape = [1] * image.ndim
    shape[axis] = n
    spectrum *= window.reshape(shape)
    return np.abs(np.fft.ifft(np.fft.ifftshift(spectrum, axes=axis), axis=axis)).astype(np.float32)
