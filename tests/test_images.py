"""How a manual mask is read, and what an image without orientation says (issue 14, items 9-10)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lumbo_bids.utils.images import ImageError, geometry_warning, interpret_mask


def cord_and_ring():
    cord = np.zeros((12, 12, 4), bool)
    cord[4:8, 4:8] = True
    ring = np.zeros_like(cord)
    ring[2:10, 2:10] = True
    return cord, ring & ~cord


@pytest.mark.parametrize("value", [1, 255, 1.0])
def test_binary_masks_are_taken_as_they_are(value):
    cord, _ = cord_and_ring()
    found, meta = interpret_mask(cord * np.float32(value), "m.nii.gz")
    assert np.array_equal(found, cord) and meta == {}


def test_a_label_map_gives_label_1_and_says_so():
    cord, ring = cord_and_ring()
    found, meta = interpret_mask(cord * 1.0 + ring * 2.0, "m.nii.gz")
    assert np.array_equal(found, cord)
    assert meta == {"ManualMaskWarning": "label map with labels 1, 2: label 1 taken as the cord, 2 ignored", "ManualMaskLabel": 1}


def test_a_label_map_without_label_1_is_refused():
    cord, ring = cord_and_ring()
    with pytest.raises(ImageError, match=r"^m\.nii\.gz: a label map with labels 2, 3 and no label 1"):
        interpret_mask(cord * 2.0 + ring * 3.0, "m.nii.gz")


def test_a_soft_mask_is_thresholded_at_half_and_says_so():
    cord, ring = cord_and_ring()
    found, meta = interpret_mask(cord * 0.9 + ring * 0.2, "m.nii.gz")
    assert np.array_equal(found, cord) and meta["ManualMaskThreshold"] == 0.5
    assert meta["ManualMaskWarning"].startswith("soft (probabilistic) mask, values 0.2 to 0.9: thresholded")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((4, 4, 4)), "the manual mask is empty"),
        (np.full((4, 4, 4), 0.4), "soft (probabilistic) mask whose values never exceed the threshold 0.5 (maximum 0.4)"),
        (np.full((4, 4, 4), 2.5), "neither integer labels nor probabilities"),
    ],
)
def test_masks_without_cord_say_why(data, message):
    with pytest.raises(ImageError, match=r"^m\.nii\.gz: ") as info:
        interpret_mask(data, "m.nii.gz")
    assert message in str(info.value)


def test_geometry_warning_only_without_qform_and_sform():
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_qform(img.affine, code=1)
    assert geometry_warning(img) is None
    img.header.set_sform(None, code=0)
    assert geometry_warning(img) is None  # the qform still orients it
    img.header.set_qform(None, code=0)
    assert geometry_warning(img).startswith("qform_code and sform_code are both 0")
