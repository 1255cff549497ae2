"""``lumbo_bids.segment``: one image from Python, without Nipype, on the image's own grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids import segment
from lumbo_bids.api import segment_image
from lumbo_bids.metrics import dice
from lumbo_bids.utils.images import ImageError

T2W = DS_SPINE_MINI / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.nii.gz"
T2W_MASK = LABELS / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w_label-SC_seg.nii.gz"


def test_segment_a_path_with_its_manual_centerline():
    """The PSR-oriented T2w: the mask comes back on the source grid and matches the manual one."""
    result = segment_image(T2W, mask=T2W_MASK)
    src, manual = nib.load(T2W), np.asanyarray(nib.load(T2W_MASK).dataobj) > 0.5
    assert result.mask.shape == src.shape and np.allclose(result.mask.affine, src.affine)
    assert result.mask.get_data_dtype() == np.uint8 and result.centerline_method == "manual mask"
    assert dice(np.asanyarray(result.mask.dataobj) > 0, manual) > 0.85
    prob = np.asanyarray(result.probability.dataobj)
    assert prob.min() >= 0 and prob.max() <= 1 and prob[manual].mean() > 0.7


def test_segment_a_nibabel_image_with_the_localiser():
    img = nib.load(T2W)
    mask = segment(img)
    manual = np.asanyarray(nib.load(T2W_MASK).dataobj) > 0.5
    assert isinstance(mask, nib.Nifti1Image) and mask.shape == img.shape
    assert dice(np.asanyarray(mask.dataobj) > 0, manual) > 0.8


def test_a_mask_on_another_grid_is_refused_by_name(tmp_path):
    other = DS_SPINE_MINI / "sub-sctTesting" / "anat" / "sub-sctTesting_T1w.nii.gz"
    with pytest.raises(ImageError, match="not on the grid"):
        segment(other, mask=T2W_MASK)
