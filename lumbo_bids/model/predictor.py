"""The one way a segmentation network turns a cropped 0.5 mm stack into a cord mask.

:class:`InferencePlan` is the typed, frozen part of a model's manifest that inference needs
(patch size, intensity standardisation, sliding-window overlap and blending, threshold);
:class:`Predictor` applies it: standardise -> sliding-window probability -> post-processing (``mask``).
The Nipype nodes (``Standardise``, ``Segment``, ``Postprocess``), validation during
fine-tuning, the search folds and the scripts all go through it, so the Dice that fine-tuning
reports is computed exactly as the participant level segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

#: inference settings when a model's manifest gives none
DEFAULT_INFERENCE = {"threshold": 0.5, "overlap": 0.5, "blend": "gaussian"}


@dataclass(frozen=True)
class InferencePlan:
    """How to segment with a model: from its manifest (:meth:`from_manifest`), never edited."""

    patch_size: tuple[int, ...]
    intensity: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = DEFAULT_INFERENCE["threshold"]
    overlap: float = DEFAULT_INFERENCE["overlap"]
    blend: str = DEFAULT_INFERENCE["blend"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        object.__setattr__(self, "intensity", MappingProxyType(dict(self.intensity or {})))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> InferencePlan:
        """The plan of a (checked: :func:`~lumbo_bids.model.manifest.manifest_problem`) manifest."""
        pre, inference = manifest["preprocessing"], {**DEFAULT_INFERENCE, **(manifest.get("inference") or {})}
        return cls(
            patch_size=pre["patch_size"],
            intensity=pre.get("intensity") or {},
            threshold=float(inference["threshold"]),
            overlap=float(inference["overlap"]),
            blend=str(inference["blend"]),
        )


class Predictor:
    """A network and its :class:`InferencePlan`.

    Parameters
    ----------
    model : keras.Model
        3D network mapping ``(B, *patch, 1)`` to probabilities.
    plan : InferencePlan
    """

    def __init__(self, model: Any, plan: InferencePlan) -> None:
        from .inference import keras_predict_fn

        self.model, self.plan = model, plan
        self._predict = keras_predict_fn(model)

    @classmethod
    def from_artifact(cls, artifact) -> Predictor:
        """Build the network of a :class:`~lumbo_bids.model.artifact.ModelArtifact` with its plan."""
        return cls(artifact.build_model(), artifact.plan)

    def standardise(self, stack: np.ndarray) -> np.ndarray:
        """The plan's intensity standardisation of a cropped stack (float32)."""
        from ..intensity import apply_intensity

        return apply_intensity(np.asarray(stack), dict(self.plan.intensity)).astype(np.float32)

    def probability(self, standardised: np.ndarray, overlap: float | None = None, tta: bool = False) -> np.ndarray:
        """Cord probability of a standardised stack (sliding windows, the plan's blending)."""
        from .inference import sliding_window_predict

        return sliding_window_predict(
            self._predict,
            np.asarray(standardised, dtype=np.float32),
            patch_size=self.plan.patch_size,
            overlap=self.plan.overlap if overlap is None else overlap,
            blend=self.plan.blend,
            tta_flips=tta,
        )

    def mask(self, probability: np.ndarray) -> np.ndarray:
        """Binary cord mask (uint8 0 / 1) of a probability map: the plan's threshold, then post-processing."""
        from ..postproc import postprocess

        return postprocess(probability, threshold=self.plan.threshold)

    def segment(self, stack: np.ndarray) -> np.ndarray:
        """Binary cord mask (uint8 0 / 1) of a raw cropped stack: standardise, predict, post-process."""
        return self.mask(self.probability(self.standardise(stack)))
