"""Cord heat-map with a deepseg_sc centerline model (``*_ctr.h5``), as SCT computes it.

SCT (``spinalcordtoolbox/deepseg_sc/core.py``) localises the cord for
``sct_deepseg_sc -centerline cnn`` as follows:

1. ``deep_segmentation_spinalcord``: reorient the image to SCT's ``RPI``
   (voxel axes pointing to Left, Anterior, Superior, i.e. nibabel
   ``('L', 'A', 'S')``) and resample it with linear interpolation to
   0.5 x 0.5 mm in-plane, keeping the native slice spacing
   (``resample_nib(new_size=[0.5, 0.5, dim[6]])``) -> :data:`CTR_RESOLUTION_MM`.
2. ``find_centerline(algo='cnn')``: build ``nn_architecture_ctr`` with the
   contrast's settings and load ``{contrast}_ctr.h5``.
3. ``heatmap``: pad the R-L axis with zeros to a multiple of 80; crop the
   A-P axis (anterior end) to a multiple of 80, or zero-pad it to 80 when
   smaller; ``scale_intensity`` the whole padded volume: clip to its 2nd-98th
   percentiles and map linearly to [0, 255] (skimage ``rescale_intensity``);
   per 80x80 block standardise with the training mean / std of the contrast
   (``_normalize_data``; :data:`CTR_INTENSITY_STATS`) and predict.
   Slice by slice: ``scan_slice`` predicts all non-overlapping 80x80 blocks of
   the slice; once the cord is found (max > 0.5), the next slice is predicted
   on a single 80x80 block centred on the centre of mass of the previous
   slice's ``> 0.5`` region (``_find_crop_start_end``), the rest of that
   slice staying 0; if that block detects nothing, the slice is scanned again.
4. For OptiC, SCT then zeroes values < 0.5 and applies a distance transform
   per slice; that step belongs to the centerline fitting, not to the network
   output, and is not reproduced here.

:func:`prepare_ctr_input` performs step 1 on a NIfTI image; :func:`sct_heatmap`
performs step 3 as a pure function on an array already prepared by step 1;
:func:`sct_heatmap_on_grid` (what the participant level calls) takes an RPI volume
of any voxel size with its affine, checks the orientation and brings the slices to
the models' 0.5 mm in-plane resolution when they are not there (and the heat-map
back). :func:`sct_heatmap` computes the heat-map
batched: all grid blocks of all slices in one pass, then
one block per detected slice centred on the centre of mass of the largest
``> 0.5`` component of *that slice's* grid prediction (SCT uses the previous
slice's centre, which requires a sequential loop). It returns the sigmoid
probabilities, same shape as the input, float32 in [0, 1].
"""

from __future__ import annotations

import keras
import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from nibabel.processing import resample_from_to
from scipy import ndimage

from ..errors import InvalidInputError
from ..geometry import Grid, resample_to_grid, resampled_grid

__all__ = [
    "CTR_ORIENTATION",
    "CTR_PATCH_SIZE",
    "CTR_RESOLUTION_MM",
    "CTR_INTENSITY_STATS",
    "DETECTION_THRESHOLD",
    "prepare_ctr_input",
    "scale_intensity",
    "sct_heatmap",
    "sct_heatmap_on_grid",
]

#: Voxel size SCT resamples to before the ctr model: 0.5 mm along R-L and A-P;
#: ``None``: the slice (S-I) spacing is left as acquired.
CTR_RESOLUTION_MM: tuple[float, float, float | None] = (0.5, 0.5, None)
#: SCT's ``RPI`` orientation, in nibabel axis codes (direction each axis points to).
CTR_ORIENTATION: tuple[str, str, str] = ("L", "A", "S")
#: Axial block size of the ctr models (``dct_patch_ctr[...]['size']``).
CTR_PATCH_SIZE: tuple[int, int] = (80, 80)
#: Training mean / std after ``scale_intensity``, per contrast (``dct_patch_ctr``).
CTR_INTENSITY_STATS: dict[str, tuple[float, float]] = {
    "t2": (51.1417, 57.4408),
    "t2s": (68.8591, 71.4659),
    "t1": (55.7359, 64.3149),
    "dwi": (55.744, 45.003),
}
#: Probability above which SCT considers the cord detected in a slice.
DETECTION_THRESHOLD = 0.5


def prepare_ctr_input(img: nib.spatialimages.SpatialImage, order: int = 1) -> nib.Nifti1Image:
    """Reorient to RPI and resample to :data:`CTR_RESOLUTION_MM`, as SCT does before the ctr model.

    Mirrors ``deep_segmentation_spinalcord`` + ``resampling.resample_nib(new_size_type='mm')``:
    the voxel grid keeps its (possibly oblique) axes, the new shape is
    ``round(shape * zoom / new_zoom)``, the affine's columns are scaled by
    ``shape / new_shape`` (voxel 0 keeps its centre) and values are
    interpolated with spline ``order`` (1: SCT's linear), ``mode='nearest'``.

    Parameters
    ----------
    img : nibabel image
        3D image (e.g. ``nibabel.load(path)``); a mask can use ``order=0``.
    order : int
        Interpolation order.

    Returns
    -------
    nibabel.Nifti1Image
        Image with axis codes :data:`CTR_ORIENTATION` and voxel size 0.5 x 0.5 x
        native slice thickness.
    """
    if len(img.shape) != 3:
        raise ValueError(f"expected a 3D image, got shape {img.shape}")
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(CTR_ORIENTATION))
    img = img.as_reoriented(transform)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    target = np.array([r if r is not None else z for r, z in zip(CTR_RESOLUTION_MM, zooms)])
    old_shape = np.asarray(img.shape[:3])
    new_shape = np.maximum(np.rint(old_shape * zooms / target).astype(int), 1)
    affine = img.affine @ np.diag(np.append(old_shape / new_shape, 1.0))
    return resample_from_to(img, (tuple(int(n) for n in new_shape), affine), order=order, mode="nearest")


def scale_intensity(data: np.ndarray, out_min: float = 0.0, out_max: float = 255.0) -> np.ndarray:
    """Clip to the 2nd-98th percentiles and map linearly to ``[out_min, out_max]`` (SCT ``scale_intensity``).

    A volume whose 2nd and 98th percentiles are equal maps to ``out_min``.
    """
    data = np.asarray(data, dtype=np.float32)
    p2, p98 = np.percentile(data, (2, 98))
    if p98 <= p2:
        return np.full_like(data, out_min)
    clipped = np.clip(data, p2, p98)
    return ((clipped - p2) / (p98 - p2) * (out_max - out_min) + out_min).astype(np.float32)


def _model_patch_size(model: keras.Model) -> tuple[int, int]:
    """The model's fixed axial input size, or :data:`CTR_PATCH_SIZE` if it accepts any."""
    shape = model.input_shape
    if len(shape) != 4 or shape[-1] != 1:
        raise ValueError(f"expected a 2D single-channel model, got input shape {shape}")
    height, width = shape[1:3]
    return (int(height), int(width)) if height and width else CTR_PATCH_SIZE


def _pad_crop_like_sct(volume: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Zero-pad axis 0 to a multiple of the patch; crop axis 1 to one (or pad it up to one patch)."""
    nx, ny, _ = volume.shape
    px, py = patch
    x_pad = -nx % px
    if ny > py:
        volume = volume[:, : ny - ny % py]
        y_pad = 0
    else:
        y_pad = py - ny
    return np.pad(volume, ((0, x_pad), (0, y_pad), (0, 0)))


def _predict_blocks(model: keras.Model, blocks: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Predict a list of equally sized 2D blocks, returning ``(n, h, w)`` probabilities."""
    if not blocks:
        return np.zeros((0, 0, 0), np.float32)
    batch = np.stack(blocks)[..., None].astype(np.float32)
    return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0))[..., 0]


def _grid_pass(model: keras.Model, data: np.ndarray, patch: tuple[int, int], batch_size: int) -> np.ndarray:
    """SCT ``scan_slice`` on every slice: predict all non-overlapping blocks."""
    nx, ny, nz = data.shape
    px, py = patch
    corners = [(x, y) for y in range(0, ny, py) for x in range(0, nx, px)]
    blocks = [data[x : x + px, y : y + py, z] for z in range(nz) for x, y in corners]
    preds = _predict_blocks(model, blocks, batch_size)
    out = np.zeros(data.shape, np.float32)
    for index, pred in enumerate(preds):
        z, k = divmod(index, len(corners))
        x, y = corners[k]
        out[x : x + px, y : y + py, z] = pred
    return out


def _crop_start(centre: float, size: int, dim: int) -> int:
    """Start of a ``size`` window around ``centre`` kept inside ``[0, dim)`` (SCT ``_find_crop_start_end``)."""
    start = int(centre) - size // 2 + 1
    return int(min(max(start, 0), max(dim - size, 0)))


def _largest_component_centre(slice_prob: np.ndarray) -> tuple[float, float] | None:
    """Centre of mass of the largest ``> 0.5`` connected region, or ``None`` if there is none."""
    labels, count = ndimage.label(slice_prob > DETECTION_THRESHOLD)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    cx, cy = ndimage.center_of_mass(labels == largest)
    return float(cx), float(cy)


def _recentre_pass(model: keras.Model, data: np.ndarray, grid: np.ndarray, patch: tuple[int, int], batch_size: int) -> np.ndarray:
    """SCT's tracking step: re-predict each detected slice on one block centred on the cord."""
    px, py = patch
    starts, slices = [], []
    for z in range(data.shape[2]):
        centre = _largest_component_centre(grid[:, :, z])
        if centre is not None:
            x0 = _crop_start(centre[0], px, data.shape[0])
            y0 = _crop_start(centre[1], py, data.shape[1])
            starts.append((x0, y0, z))
            slices.append(data[x0 : x0 + px, y0 : y0 + py, z])
    out = grid.copy()
    for (x0, y0, z), pred in zip(starts, _predict_blocks(model, slices, batch_size)):
        if pred.max() > DETECTION_THRESHOLD:
            out[:, :, z] = 0.0
            out[x0 : x0 + px, y0 : y0 + py, z] = pred
    return out


def sct_heatmap(
    model: keras.Model,
    volume_rpi_05mm: np.ndarray,
    contrast: str = "t2",
    batch_size: int = 32,
    recentre: bool = True,
) -> np.ndarray:
    """Cord probability heat-map of a deepseg_sc centerline model, computed as SCT does.

    Parameters
    ----------
    model : keras.Model
        A ctr model, e.g. ``load_keras2_h5(".../t2_ctr.h5")`` or
        ``build_unet2d(...)`` with trained weights; input ``(80, 80, 1)`` or
        ``(None, None, 1)`` (then processed in 80x80 blocks).
    volume_rpi_05mm : numpy.ndarray
        3D image already oriented RPI (nibabel ``('L', 'A', 'S')``) and resampled
        to :data:`CTR_RESOLUTION_MM` (0.5 mm in-plane, native slice spacing).
    contrast : {"t2", "t2s", "t1", "dwi"}
        Selects the training mean / std of :data:`CTR_INTENSITY_STATS`.
    batch_size : int
        Blocks per prediction batch.
    recentre : bool
        Re-predict each detected slice on a block centred on the cord (SCT's
        tracking step); ``False`` keeps the plain block-grid prediction.

    Returns
    -------
    numpy.ndarray
        float32 array of the input's shape, values in [0, 1]; 0 where SCT
        crops the anterior end of the field of view.
    """
    volume = np.asarray(volume_rpi_05mm)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a non-empty 3D volume, got shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume contains NaN or infinite values")
    if contrast not in CTR_INTENSITY_STATS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {sorted(CTR_INTENSITY_STATS)}")
    patch = _model_patch_size(model)
    mean, std = CTR_INTENSITY_STATS[contrast]
    data = (scale_intensity(_pad_crop_like_sct(volume.astype(np.float32), patch)) - mean) / std
    heat = _grid_pass(model, data, patch, batch_size)
    if recentre:
        heat = _recentre_pass(model, data, heat, patch, batch_size)
    nx, ny, _ = volume.shape
    out = np.zeros(volume.shape, np.float32)
    kept_y = min(ny, heat.shape[1])
    out[:, :kept_y] = heat[:nx, :kept_y]
    return np.clip(out, 0.0, 1.0)


def sct_heatmap_on_grid(
    model: keras.Model, volume: np.ndarray, affine: np.ndarray, contrast: str = "t2", batch_size: int = 32
) -> np.ndarray:
    """:func:`sct_heatmap` of an RPI volume of any voxel size, computed at :data:`CTR_RESOLUTION_MM`.

    SCT's ctr models were trained on slices at 0.5 x 0.5 mm: fed another in-plane voxel size
    they see a cord of the wrong size. A volume whose in-plane voxel size differs by more than
    0.001 mm is resampled (linear, slice spacing kept) to 0.5 mm for the network, and the
    heat-map is resampled back onto the volume's grid.

    Parameters
    ----------
    model, contrast, batch_size
        As for :func:`sct_heatmap`.
    volume : numpy.ndarray
        3D image oriented RPI (nibabel axis codes :data:`CTR_ORIENTATION`).
    affine : numpy.ndarray
        Its 4x4 voxel-to-world affine.

    Returns
    -------
    numpy.ndarray
        float32 heat-map on ``volume``'s grid, values in [0, 1].

    Raises
    ------
    LumboError
        If the affine is not oriented RPI.
    """
    grid = Grid(tuple(np.shape(volume)), affine)
    codes = nib.aff2axcodes(grid.affine)
    if tuple(codes) != CTR_ORIENTATION:
        raise InvalidInputError(
            f"SCT centerline models need an RPI volume (axes {''.join(CTR_ORIENTATION)}), got axes {''.join(codes)}",
        )
    inplane = np.asarray(CTR_RESOLUTION_MM[:2], dtype=float)
    if np.allclose(grid.zooms[:2], inplane, atol=1e-3):
        return sct_heatmap(model, volume, contrast=contrast, batch_size=batch_size)
    target = resampled_grid(grid, (*inplane, float(grid.zooms[2])))
    heat = sct_heatmap(model, resample_to_grid(volume, grid.affine, target), contrast=contrast, batch_size=batch_size)
    return np.clip(resample_to_grid(heat, target.affine, grid), 0.0, 1.0)
