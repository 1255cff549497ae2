"""Patch-based inference: sliding windows with Gaussian blending (nnU-Net style) and 2D slices.

A *predict function* maps a batch ``(B, *spatial, 1)`` float32 to probabilities of the same
shape; :func:`keras_predict_fn` wraps a Keras model into one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]

BLENDS = ("gaussian", "uniform")
#: flips averaged by test-time augmentation, as axes of the (X, Y, Z) volume: none, x, z, x+z
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (0,), (2,), (0, 2))


def keras_predict_fn(model: Any, batch_size: int = 4) -> PredictFn:
    """Wrap a Keras model as a predict function that always runs on ``batch_size`` samples.

    Batches are split into chunks of ``batch_size``; the last chunk is zero-padded, so the
    network only ever sees one input shape per patch size and is traced once (TensorFlow
    backend: a ``tf.function``; other backends: eager ``model(x, training=False)``).

    Parameters
    ----------
    model : keras.Model
        Network mapping ``(B, *spatial, C)`` to ``(B, *spatial, 1)``.
    batch_size : int
        Fixed number of samples per network call.

    Returns
    -------
    PredictFn
        ``fn(batch) -> float32 array`` with as many samples as ``batch``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    import keras

    call: Callable[[Any], Any] = lambda x: model(x, training=False)  # noqa: E731
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        call = tf.function(call, reduce_retracing=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        outputs = []
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            n = len(chunk)
            if n < batch_size:
                pad = np.zeros((batch_size - n, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            outputs.append(np.asarray(keras.ops.convert_to_numpy(call(chunk)))[:n])
        return np.concatenate(outputs).astype(np.float32, copy=False)

    return predict


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """nnU-Net importance map: a Gaussian centred on the patch, ``sigma = sigma_scale * size``.

    Normalised to a maximum of 1 and floored at 1e-3 so that border voxels still count.

    Parameters
    ----------
    patch_size : sequence of int
        Patch shape.
    sigma_scale : float
        Standard deviation as a fraction of the patch size, per axis.

    Returns
    -------
    np.ndarray
        float64 weights of shape ``patch_size``.
    """
    weights = np.ones((), dtype=np.float64)
    for size in patch_size:
        coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
        axis = np.exp(-0.5 * (coords / (sigma_scale * size)) ** 2)
        weights = np.multiply.outer(weights, axis)
    return np.maximum(weights / weights.max(), 1e-3)


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of tiles of length ``patch`` covering ``size`` voxels (``size >= patch``).

    The step is at most ``patch * (1 - overlap)`` (at least 1), spread evenly so that the first
    tile starts at 0 and the last one ends flush with the border.
    """
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch {patch}")
    target = max(1.0, patch * (1.0 - overlap))
    n_tiles = math.ceil((size - patch) / target) + 1
    if n_tiles == 1:
        return [0]
    step = (size - patch) / (n_tiles - 1)
    return [int(round(i * step)) for i in range(n_tiles)]


def _predict_batch(predict_fn: PredictFn, batch: np.ndarray, flips: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Mean of ``predict_fn`` over flipped copies of ``batch`` (B, X, Y, Z), each unflipped back."""
    total = np.zeros(batch.shape, dtype=np.float64)
    for axes in flips:
        batch_axes = tuple(a + 1 for a in axes)
        inputs = np.flip(batch, batch_axes) if axes else batch
        out = np.asarray(predict_fn(np.ascontiguousarray(inputs)[..., None]))
        if out.shape != (*batch.shape, 1):
            raise ValueError(f"predict_fn returned {out.shape}, expected {(*batch.shape, 1)}")
        total += np.flip(out[..., 0], batch_axes) if axes else out[..., 0]
    return total / len(flips)


def sliding_window_predict(
    predict_fn: PredictFn,
    volume: np.ndarray,
    patch_size: Sequence[int] = (48, 48, 48),
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta_flips: bool = False,
) -> np.ndarray:
    """Predict a whole volume patch by patch and blend the overlapping predictions.

    The volume is zero-padded (centred) to at least ``patch_size``, tiled with ``overlap``
    (last tile flush with the border), predicted in batches, weighted by a Gaussian importance
    map (``sigma = patch / 8``) or uniformly, normalised by the accumulated weights and cropped
    back.  Accumulation is in float64 in a fixed order: the result is deterministic.

    Parameters
    ----------
    predict_fn : PredictFn
        ``(B, X, Y, Z, 1)`` float32 -> ``(B, X, Y, Z, 1)`` probabilities.
    volume : np.ndarray
        ``(X, Y, Z)`` image, preprocessed as the model expects.
    patch_size : sequence of 3 int
        Network input size.
    overlap : float
        Fraction of a patch shared by neighbouring tiles, in ``[0, 1)``.
    blend : {"gaussian", "uniform"}
        Weighting of each patch's prediction.
    batch_size : int
        Patches per call of ``predict_fn``.
    tta_flips : bool
        Average over flips along x and z (test-time augmentation, 4 passes).

    Returns
    -------
    np.ndarray
        float32 probabilities, same shape as ``volume``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    patch = tuple(int(p) for p in patch_size)
    _check_window_arguments(volume, patch, overlap, blend, batch_size)
    extra = [max(p - s, 0) for s, p in zip(volume.shape, patch)]
    pads = [(e // 2, e - e // 2) for e in extra]
    padded = np.pad(volume, pads, mode="constant")
    weight = gaussian_importance_map(patch) if blend == "gaussian" else np.ones(patch)
    flips = TTA_FLIPS if tta_flips else ((),)
    acc, norm = _accumulate_tiles(predict_fn, padded, patch, overlap, weight, batch_size, flips)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, volume.shape))
    return (acc[crop] / norm[crop]).astype(np.float32)


def _check_window_arguments(volume: np.ndarray, patch: tuple[int, ...], overlap: float, blend: str, batch_size: int) -> None:
    """Raise ``ValueError`` on arguments :func:`sliding_window_predict` cannot use."""
    if volume.ndim != 3 or len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"need a 3D volume and a 3D patch, got {volume.shape} and {patch}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not np.isfinite(volume).all():
        raise ValueError("volume holds NaN or infinite values")


def _accumulate_tiles(
    predict_fn: PredictFn,
    padded: np.ndarray,
    patch: tuple[int, ...],
    overlap: float,
    weight: np.ndarray,
    batch_size: int,
    flips: Sequence[tuple[int, ...]],
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of the tiles' predictions over ``padded`` and the sum of their weights (float64)."""
    axes_starts = [tile_starts(s, p, overlap) for s, p in zip(padded.shape, patch)]
    starts = list(itertools.product(*axes_starts))
    acc = np.zeros(padded.shape, dtype=np.float64)
    norm = np.zeros(padded.shape, dtype=np.float64)
    for first in range(0, len(starts), batch_size):
        corners = starts[first : first + batch_size]
        slices = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in corners]
        preds = _predict_batch(predict_fn, np.stack([padded[sl] for sl in slices]), flips)
        for sl, pred in zip(slices, preds):
            acc[sl] += pred * weight
            norm[sl] += weight
    return acc, norm


def predict_slices(predict_fn_2d: PredictFn, volume: np.ndarray, batch_size: int = 32, multiple: int = 16) -> np.ndarray:
    """Apply a 2D network to every axial slice ``volume[:, :, z]``.

    Slices are zero-padded (centred) in-plane to a multiple of ``multiple`` (what a U-Net with
    four poolings needs), predicted ``batch_size`` at a time and cropped back.

    Parameters
    ----------
    predict_fn_2d : PredictFn
        ``(B, X, Y, 1)`` float32 -> ``(B, X, Y, 1)`` probabilities.
    volume : np.ndarray
        ``(X, Y, Z)`` image.
    batch_size : int
        Slices per call of ``predict_fn_2d``.
    multiple : int
        In-plane sizes are padded up to a multiple of this.

    Returns
    -------
    np.ndarray
        float32 probabilities, same shape as ``volume``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"need a 3D volume, got shape {volume.shape}")
    if batch_size < 1 or multiple < 1:
        raise ValueError("batch_size and multiple must be >= 1")
    nx, ny, nz = volume.shape
    extra = [(-n) % multiple for n in (nx, ny)]
    pads = [(e // 2, e - e // 2) for e in extra]
    slices = np.pad(np.moveaxis(volume, 2, 0), [(0, 0), *pads], mode="constant")
    out = np.empty((nz, nx, ny), dtype=np.float32)
    for first in range(0, nz, batch_size):
        batch = np.ascontiguousarray(slices[first : first + batch_size])[..., None]
        pred = np.asarray(predict_fn_2d(batch))
        if pred.shape != batch.shape:
            raise ValueError(f"predict_fn_2d returned {pred.shape}, expected {batch.shape}")
        (x0, _), (y0, _) = pads
        out[first : first + len(batch)] = pred[:, x0 : x0 + nx, y0 : y0 + ny, 0]
    return np.ascontiguousarray(np.moveaxis(out, 0, 2))
