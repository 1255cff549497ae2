"""Reading and writing NIfTI files with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

GRID_ATOL_MM = 1e-3


class ImageError(ValueError):
    """A bad input image: the message names the file and what is wrong."""


def load_image(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI header (data stays on disk) or raise :class:`ImageError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise ImageError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageError(f"{path}: not a NIfTI image ({type(img).__name__})")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        raise ImageError(f"{path}: the affine (qform/sform) is missing or singular")
    return img


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """(float32 3-D data with scaling applied and NaN->0, affine, image) of a NIfTI file."""
    from ..geometry import load_volume

    img = load_image(path)
    try:
        data = load_volume(img)
    except ValueError as exc:
        raise ImageError(f"{path}: {exc}") from None
    except (OSError, EOFError, Exception) as exc:
        raise ImageError(f"{path}: the image data cannot be read ({type(exc).__name__}: {exc})") from None
    return data, img.affine, img


def geometry_warning(img: nib.spatialimages.SpatialImage) -> str | None:
    """What to say about an image whose header gives no orientation (qform and sform codes 0)."""
    header = img.header
    if not isinstance(header, nib.Nifti1Header) or int(header["qform_code"]) or int(header["sform_code"]):
        return None
    return (
        "qform_code and sform_code are both 0 (no scanner orientation): processed on nibabel's "
        "fall-back affine from the voxel sizes alone, so left-right, orientation and world "
        "coordinates are guessed; check the orientation and fix the header"
    )


#: an in-plane field of view (left-right or anterior-posterior) below this holds no cord and its CSF
MIN_FIELD_OF_VIEW_MM = 16.0


def field_of_view_warning(img: nib.spatialimages.SpatialImage) -> str | None:
    """What to say about an image whose field of view is narrower than a cord and the CSF around
    it (:data:`MIN_FIELD_OF_VIEW_MM`) left-right or anterior-posterior: no mask can be trusted."""
    shape = np.asarray(img.shape[:3], dtype=np.float64)
    extent = np.abs(np.asarray(img.affine, dtype=np.float64)[:3, :3]) @ shape  # mm along x (LR), y (AP), z
    narrow = [
        f"{name} {mm:.1f} mm" for name, mm in zip(("left-right", "anterior-posterior"), extent[:2]) if mm < MIN_FIELD_OF_VIEW_MM
    ]
    if not narrow:
        return None
    return (
        f"field of view {' and '.join(narrow)}: narrower than a spinal cord with its CSF "
        f"({MIN_FIELD_OF_VIEW_MM:.0f} mm), so the mask cannot be trusted"
    )


#: voxels of a manual mask above this value are cord (binary and soft masks)
MASK_THRESHOLD = 0.5


def interpret_mask(data: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    """The cord (bool array) in a manual mask, and the sidecar entries saying how it was read.

    A binary mask (one non-zero value: 1, 255...) is cord where it is above
    :data:`MASK_THRESHOLD`; a label map with several labels is cord where it is 1; a soft
    (probabilistic) mask, with values between 0 and 1, is cord above :data:`MASK_THRESHOLD`.
    :class:`ImageError` (naming ``name``) when no cord is found or the rule cannot tell.
    """
    values = np.unique(data[data != 0])
    if values.size == 0:
        raise ImageError(f"{name}: the manual mask is empty (all zeros)")
    if np.all(values == np.round(values)):
        cord, meta = _cord_of_labels(data, values, name)
    else:
        cord, meta = _cord_of_soft_mask(data, values, name)
    if not cord.any():
        raise ImageError(f"{name}: the manual mask has no voxel above {MASK_THRESHOLD}: no cord")
    return cord, meta


def _listed(values: np.ndarray, most: int = 6) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:most])
    return shown + (f", ... ({values.size} values)" if values.size > most else "")


def _cord_of_labels(data: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    labels = values[values > 0]
    if labels.size <= 1:  # binary
        return data > MASK_THRESHOLD, {}
    if 1 not in labels:
        raise ImageError(
            f"{name}: a label map with labels {_listed(labels)} and no label 1: cannot tell which "
            "is the cord; give a binary mask, or label the cord 1"
        )
    others = labels[labels != 1]
    warning = f"label map with labels {_listed(labels)}: label 1 taken as the cord, {_listed(others)} ignored"
    return data == 1, {"ManualMaskWarning": warning, "ManualMaskLabel": 1}


def _cord_of_soft_mask(data: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    high = float(values.max())
    if high > 1:
        raise ImageError(
            f"{name}: values up to {high:.4g} that are neither integer labels nor probabilities "
            "(0 to 1): cannot tell which voxels are cord"
        )
    if high <= MASK_THRESHOLD:
        raise ImageError(
            f"{name}: a soft (probabilistic) mask whose values never exceed the threshold "
            f"{MASK_THRESHOLD} (maximum {high:.3g}): no cord; give a binary mask, or probabilities "
            f"above {MASK_THRESHOLD} for the cord"
        )
    warning = (
        f"soft (probabilistic) mask, values {float(values.min()):.3g} to {high:.3g}: "
        f"thresholded, cord where the value is above {MASK_THRESHOLD}"
    )
    return data > MASK_THRESHOLD, {"ManualMaskWarning": warning, "ManualMaskThreshold": MASK_THRESHOLD}


def check_same_grid(img_a: nib.spatialimages.SpatialImage, img_b, name_a: str, name_b: str) -> None:
    """Raise :class:`ImageError` unless both images share shape and affine (world grid)."""
    shape_a, shape_b = img_a.shape[:3], img_b.shape[:3]
    if shape_a != shape_b or not np.allclose(img_a.affine, img_b.affine, atol=GRID_ATOL_MM):
        raise ImageError(
            f"{name_b}: mask is not on the grid of {name_a} (shape {shape_b} vs {shape_a}, "
            f"max affine difference {np.abs(img_a.affine - img_b.affine).max():.3g})"
        )


def make_image(data: np.ndarray, affine: np.ndarray, reference=None, dtype=None) -> nib.Nifti1Image:
    """``data`` as a NIfTI image with ``affine`` (qform and sform set, codes copied from ``reference``).

    Spatial units are the reference's when it states them, millimetres otherwise (never
    "unknown": BIDS asks for units on every image); time units likewise, seconds by default.
    """
    array = np.asarray(data if dtype is None else data.astype(dtype))
    img = nib.Nifti1Image(array, affine)
    header = img.header
    if reference is not None:
        xyz, t = reference.header.get_xyzt_units()
        header.set_xyzt_units(
            xyz=xyz if xyz in ("mm", "meter", "micron") else "mm", t=t if t in ("sec", "msec", "usec") else "sec"
        )
        qcode = int(reference.header["qform_code"]) or 1
        scode = int(reference.header["sform_code"]) or 1
    else:
        header.set_xyzt_units(xyz="mm", t="sec")
        qcode = scode = 1
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    header.set_data_dtype(array.dtype)
    return img


def save_image(data: np.ndarray, affine: np.ndarray, path: str | Path, reference=None, dtype=None) -> Path:
    """Write :func:`make_image` of ``data`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(make_image(data, affine, reference, dtype), str(path))
    return path
