"""The one way a segmentation network turns a cropped 0.5 mm stack into a cord mask.

:class:`Predictor` applies a model's :class:`~lumbo_bids.plan.ModelPlan` (patch size, intensity
standardisation, sliding-window overlap and blending, threshold): standardise -> sliding-window
probability -> post-processing (``mask``).
The Nipype nodes (``Standardise``, ``Segment``, ``Postprocess``), validation during
fine-tuning, the search folds and the scripts all go through it, so the Dice that fine-tuning
reports is computed exactly as the participant level segments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plan import ModelPlan


class Predictor:
    """A network and its :class:`~lumbo_bids.plan.ModelPlan`.

    Parameters
    ----------
    model : keras.Model or None
        3D network mapping ``(B, *patch, 1)`` to probabilities; None for a predictor that only
        standardises and post-processes (:meth:`standardise`, :meth:`mask`).
    plan : ModelPlan
    """

    def __init__(self, model: Any, plan: ModelPlan) -> None:
        self.model, self.plan = model, plan
        self._predict = None

    @classmethod
    def from_artifact(cls, artifact, plan: ModelPlan | None = None) -> Predictor:
        """Build the network of a :class:`~lumbo_bids.model.artifact.ModelArtifact`, with its
        plan or ``plan`` (the artifact's with the run's overrides)."""
        return cls(artifact.build_model(), artifact.plan if plan is None else plan)

    def standardise(self, stack: np.ndarray) -> np.ndarray:
        """The plan's intensity standardisation of a cropped stack (float32)."""
        from ..intensity import apply_intensity

        return apply_intensity(np.asarray(stack), self.plan.intensity_params).astype(np.float32)

    def probability(self, standardised: np.ndarray, overlap: float | None = None, tta: bool = False) -> np.ndarray:
        """Cord probability of a standardised stack (the plan's sliding window, overlap and blending)."""
        from .inference import keras_predict_fn, sliding_window_predict

        if self.model is None:
            raise ValueError("this Predictor has no network (it only standardises and post-processes)")
        if self._predict is None:
            self._predict = keras_predict_fn(self.model)
        return sliding_window_predict(
            self._predict,
            np.asarray(standardised, dtype=np.float32),
            patch_size=self.plan.inference_window,
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
