"""How much of the imaged cord a manual mask labels: partial masks are found, not trained on.

A manual mask may label the cord on only some of the slices that show it (an annotator who
stopped, a mask drawn on every third slice). Used as a full label it teaches the network that the
cord is background there, and scored against a prediction it gives a low Dice that says nothing.
Along the cord axis (the RPI grid's z), a slice is *unexplained* when it is imaged but has no
label and lies between labelled slices, above the mask's top, or below a lower end that does not
taper (a cord that ends inside the field of view tapers to the conus; a cord that stops at full
width was cut short). A mask is *partial* when the unexplained slices are more than
:data:`MAX_UNEXPLAINED` of the imaged ones. Pure numpy/nibabel, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import RPI, reorient

#: a mask is partial when more than this share of the imaged slices is unexplained
MAX_UNEXPLAINED = 0.5
#: a lower end tapers when its last slice holds less than this share of the median slice's cord
TAPER_FRACTION = 0.5


@dataclass(frozen=True)
class LabelCoverage:
    """Per RPI slice (inferior to superior): whether it is labelled, and imaged."""

    labelled: np.ndarray
    imaged: np.ndarray
    unexplained: int

    @property
    def partial(self) -> bool:
        return self.unexplained > MAX_UNEXPLAINED * max(int(self.imaged.sum()), 1)

    def describe(self) -> str:
        """One phrase for a warning: how many slices it labels, of how many imaged."""
        return (
            f"labels the cord on {int(self.labelled.sum())} of {int(self.imaged.sum())} imaged slices "
            f"({self.unexplained} imaged slice(s) without label between its slices, above it or below an end "
            "that does not taper): a partial mask"
        )


def label_coverage(mask: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None) -> LabelCoverage:
    """The :class:`LabelCoverage` of a (non-empty) manual mask on its native grid.

    Parameters
    ----------
    mask : np.ndarray
        3D mask (non-zero is cord) on the image's grid.
    affine : np.ndarray
        Its voxel-to-world affine.
    image : np.ndarray, optional
        The image, same grid: slices without signal (all zeros) are not imaged.
    """
    cord, _ = reorient((np.asarray(mask) > 0).astype(np.uint8), affine, RPI)
    counts = cord.sum(axis=(0, 1))
    if image is None:
        imaged = np.ones(counts.size, dtype=bool)
    else:
        imaged = reorient(np.asarray(image, dtype=np.float32), affine, RPI)[0].any(axis=(0, 1))
    labelled = counts > 0
    if not labelled.any():
        return LabelCoverage(labelled, imaged, int(imaged.sum()))
    z = np.flatnonzero(labelled)
    lo, hi = int(z[0]), int(z[-1])
    unexplained = int((imaged[lo : hi + 1] & ~labelled[lo : hi + 1]).sum()) + int(imaged[hi + 1 :].sum())
    if counts[lo] >= TAPER_FRACTION * np.median(counts[z]):  # not a conus: the cord goes on below
        unexplained += int(imaged[:lo].sum())
    return LabelCoverage(labelled, imaged, unexplained)
