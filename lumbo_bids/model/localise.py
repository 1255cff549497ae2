"""Automatic cord localisation: a 2D heat-map network over every axial slice.

Two kinds of localiser are accepted: our own artifact (task ``localisation``, a
``unet2d`` trained by :mod:`lumbo_bids.training.trainer` on the same data as the segmentation
model) and SCT's deepseg_sc centerline models (``*_ctr.h5``, Keras-2 HDF5) that a user points
to with ``--sct-models``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..intensity import apply_intensity

#: the intensity plan of the localisers that scripts/train_base_model.py trains
LOCALISER_INTENSITY = {"method": "robust", "clip": [0.5, 99.5]}


def localiser_input(volume: np.ndarray, intensity: dict | None = None) -> np.ndarray:
    """Intensity normalisation of our localiser (training and inference), with its plan's parameters."""
    return apply_intensity(np.asarray(volume, dtype=np.float32), intensity or LOCALISER_INTENSITY)


def heatmap_target(shape: tuple[int, int, int], centerline_xy: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Training target: a 2D Gaussian (peak 1) around the centerline point of every slice."""
    xs = np.arange(shape[0], dtype=np.float32)[:, None]
    ys = np.arange(shape[1], dtype=np.float32)[None, :]
    out = np.empty(shape, dtype=np.float32)
    for z, (cx, cy) in enumerate(np.asarray(centerline_xy, dtype=np.float32)):
        out[:, :, z] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma_vox**2))
    return out


def localise_heatmap(model_path: str | Path, volume: np.ndarray, affine: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Cord heat-map (same shape as ``volume``, float32 in [0, 1]).

    ``volume`` is RPI-oriented (nibabel LAS) and resampled (0.5 mm by default); ``affine`` gives
    its voxel size so that a localiser trained at another resolution sees its own resolution.
    """
    path = Path(model_path)
    if path.suffix == ".h5":
        from .sct_h5 import load_keras2_h5
        from .sct_localise import sct_heatmap_on_grid
        from .selection import SCT_CTR_FILES

        contrast = path.name.removesuffix("_ctr.h5") if path.name in SCT_CTR_FILES.values() else "t2"
        return sct_heatmap_on_grid(load_keras2_h5(path), volume, affine, contrast=contrast, batch_size=batch_size)

    from .artifact import load_artifact
    from .inference import keras_predict_fn, predict_slices

    artifact = load_artifact(path)
    model = artifact.build_model()
    wanted, intensity = artifact.plan.resolution, artifact.plan.intensity_params
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    data = np.asarray(volume, dtype=np.float32)
    # its own voxel size in-plane, and slices no closer than it along z: a 1 mm localiser on a
    # 0.5 mm stack runs on every other slice's worth (half the cost), the heat interpolated back
    own = (wanted, wanted, max(float(zooms[2]), wanted))
    if not np.allclose(zooms, own, atol=1e-3):
        from ..geometry import Grid, resample_to_grid, resampled_grid

        src = Grid(tuple(data.shape), np.asarray(affine))
        target = resampled_grid(src, own)
        heat = predict_slices(
            keras_predict_fn(model, batch_size),
            localiser_input(resample_to_grid(data, src.affine, target), intensity),
            batch_size,
        )
        return np.clip(resample_to_grid(heat, target.affine, src), 0.0, 1.0)
    heat = predict_slices(keras_predict_fn(model, batch_size), localiser_input(data, intensity), batch_size)
    return np.clip(heat, 0.0, 1.0)
