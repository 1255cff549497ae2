"""Training cases: preprocessed volumes and masks as ``.npy`` files, opened as memory maps."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .patches import cord_slices, mask_centerline


@dataclass(frozen=True)
class TrainingCase:
    """One preprocessed image and its binary cord mask, stored as ``.npy`` files.

    For the segmentation model both are the per-slice crops around the centerline; for the
    localiser (:func:`~lumbo_bids.training.dataset.heatmap_slice_dataset`) both are whole RPI volumes and the target
    heat-map is made from the mask's centerline on the fly.
    """

    subject: str  # e.g. "sub-01"
    name: str  # unique id, e.g. the source file stem
    image: Path  # .npy float32 (X, Y, Z); for a synthetic case, uint8 labels (lumbo_bids.training.synth)
    mask: Path  # .npy uint8, same shape, binary
    synthetic: bool = False  # image is a label map: every patch drawn from it is a new synthetic image
    weight: float = 1.0  # its share of the patches among the cases of its kind (synthetic or real), relative


class CaseVolumes:
    """Memory maps of the cases (a few kept open) and cached per-case indices."""

    def __init__(self, cases: Sequence[TrainingCase], max_open: int = 8) -> None:
        self.cases = list(cases)
        self.max_open = max_open
        self._open: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cord: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._centerline: dict[int, np.ndarray] = {}

    def array(self, path: Path) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        arr = np.load(path, mmap_mode="r")
        self._open[path] = arr
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return arr

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        case = self.cases[i]
        image, mask = self.array(Path(case.image)), self.array(Path(case.mask))
        if image.shape != mask.shape or image.ndim != 3:
            raise ValueError(f"case {case.name}: image {image.shape} and mask {mask.shape} must be the same 3D shape")
        return image, mask

    def cord_index(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached :func:`cord_slices` of case ``i``'s mask (a few ints a slice)."""
        if i not in self._cord:
            self._cord[i] = cord_slices(self.pair(i)[1])
        return self._cord[i]

    def centerline(self, i: int) -> np.ndarray:
        """Cached :func:`mask_centerline` of case ``i`` (``(Z, 2)`` floats)."""
        if i not in self._centerline:
            self._centerline[i] = mask_centerline(self.pair(i)[1])
        return self._centerline[i]
