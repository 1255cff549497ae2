"""Segment one image from Python, without Nipype or a BIDS dataset.

>>> from lumbo_bids import segment
>>> mask = segment("sub-01_T2w.nii.gz")                      # nibabel image, the source's native grid
>>> mask = segment(img, model="out/group/model", mask="manual.nii.gz")   # centerline from a mask

The same steps as a participant-level node chain (:class:`~lumbo_bids.preprocess.Preprocessor`,
:class:`~lumbo_bids.model.predictor.Predictor`, :func:`~lumbo_bids.geometry.to_native`), so the
result equals the ``desc-<contrast>_mask`` the participant level writes for that image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment_image` gives: the mask and probability on the source's native grid,
    and the centerline (per axial slice of the resampled RPI grid) it was cropped around."""

    mask: nib.Nifti1Image
    probability: nib.Nifti1Image
    centerline_xy: np.ndarray
    centerline_method: str


def _as_image(image) -> nib.spatialimages.SpatialImage:
    from .utils.images import load_image

    return image if isinstance(image, nib.spatialimages.SpatialImage) else load_image(image)


def _localiser_of(model, localiser) -> Path:
    """The localiser given, else the one a group level bundled with ``model`` (checksum verified),
    else the shipped one: the participant level's choice (:func:`~lumbo_bids.model.selection.choose_localiser`)."""
    from .model.selection import choose_localiser, read_segmentation_model

    if localiser is not None:
        return Path(localiser)
    return Path(choose_localiser("", None, read_segmentation_model(model))[0])


def segment_image(image, model=None, mask=None, localiser=None, tta: bool = False) -> Segmentation:
    """Segment the spinal cord of ``image`` (path or nibabel image).

    ``model``: a segmentation artifact (folder or archive; default: the shipped ``cord_seg``);
    ``mask``: a manual cord mask on the image's grid, whose centerline is then used; otherwise
    the localiser finds it (``localiser``: an artifact or SCT ``*_ctr.h5``; default: the model's
    own, else the shipped one).
    """
    from .geometry import load_volume, to_native
    from .model.artifact import load_artifact
    from .model.predictor import Predictor
    from .model.selection import SHIPPED_SEGMENTATION
    from .preprocess import Preprocessor
    from .utils.images import MASK_THRESHOLD, check_same_grid, interpret_mask, make_image

    img = _as_image(image)
    artifact = load_artifact(model or SHIPPED_SEGMENTATION)
    manual = None
    if mask is not None:
        mask_img = _as_image(mask)
        check_same_grid(img, mask_img, str(image), str(mask))
        manual, _ = interpret_mask(load_volume(mask_img), str(mask))  # label maps, soft masks: as the workflow
    preprocessor = Preprocessor.from_plan(artifact.plan, _localiser_of(model, localiser))
    case = preprocessor.run_case(load_volume(img), img.affine, manual)
    predictor = Predictor.from_artifact(artifact)
    probability = predictor.probability(predictor.standardise(case.stack), tta=tta)
    cord = predictor.mask(probability)
    native_mask = to_native(cord.astype(np.float32), case.geometry, order=1, threshold=MASK_THRESHOLD).astype(np.uint8)
    native_prob = to_native(probability, case.geometry, order=1).astype(np.float32)
    method = "manual mask" if manual is not None else "localiser"
    return Segmentation(
        make_image(native_mask, img.affine, img), make_image(native_prob, img.affine, img), case.centerline, method
    )


def segment(image, model=None, mask=None, localiser=None, tta: bool = False) -> nib.Nifti1Image:
    """The cord mask (uint8 nibabel image on ``image``'s own grid); see :func:`segment_image`."""
    return segment_image(image, model=model, mask=mask, localiser=localiser, tta=tta).mask
