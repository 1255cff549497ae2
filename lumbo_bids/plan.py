"""A model's plan: how to preprocess for its network and how to turn its output into a mask.

:class:`ModelPlan` is the typed, frozen view of a model artifact's ``model.json`` preprocessing
and inference sections (orientation, resolution, crop, patch, intensity standardisation,
threshold, sliding-window overlap and blending, contrasts), in the spirit of nnU-Net's
``PlansManager``: it is the **only** reader of those sections (:meth:`ModelPlan.from_manifest`)
and the only writer of them (:meth:`ModelPlan.sections`), and the run's command-line overrides
are applied to it once (:meth:`ModelPlan.with_overrides`). Everything downstream (the
participant level's nodes, :class:`~lumbo_bids.preprocess.Preprocessor`,
:class:`~lumbo_bids.model.predictor.Predictor`, fine-tuning, the scripts) takes a plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

#: the probability above which a voxel is cord, when a manifest gives none
DEFAULT_THRESHOLD = 0.5
#: inference settings when a manifest gives none
DEFAULT_OVERLAP, DEFAULT_BLEND = 0.5, "gaussian"
#: what :meth:`ModelPlan.with_overrides` may take from a run's config (its attribute -> the plan's field)
OVERRIDES = {"resolution": "resolution", "crop_size": "crop_size", "threshold": "threshold", "overlap": "overlap"}


def _frozen(value: Any) -> Any:
    """JSON-like ``value`` made immutable (dicts as read-only mappings, lists as tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    """The JSON form of a :func:`_frozen` value (mappings as dicts, tuples as lists)."""
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelPlan:
    """A model's preprocessing and inference plan; build it with :meth:`from_manifest`.

    ``crop_size`` is None for a localiser (it sees whole slices); ``intensity`` is the
    standardisation's parameters (:func:`lumbo_bids.intensity.apply_intensity`; empty: the
    percentile fallback). ``window`` is the sliding window of inference (``inference.window``;
    None: the training ``patch_size``): a fully convolutional network may see more context at
    inference than in a training patch, e.g. the whole crop in-plane (:attr:`inference_window`)."""

    patch_size: tuple[int, ...]
    resolution: float = 0.5
    crop_size: tuple[int, int] | None = (64, 64)
    intensity: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    overlap: float = DEFAULT_OVERLAP
    blend: str = DEFAULT_BLEND
    orientation: str = "RPI"
    contrasts: tuple[str, ...] = ()
    window: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "patch_size", tuple(int(v) for v in self.patch_size))
        set_(self, "resolution", float(self.resolution))
        set_(self, "crop_size", None if self.crop_size is None else tuple(int(v) for v in self.crop_size))
        set_(self, "intensity", _frozen(dict(self.intensity or {})))
        set_(self, "threshold", float(self.threshold))
        set_(self, "overlap", float(self.overlap))
        set_(self, "contrasts", tuple(self.contrasts))
        set_(self, "window", None if self.window is None else tuple(int(v) for v in self.window))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelPlan:
        """The plan of a checked manifest (:func:`~lumbo_bids.model.manifest.manifest_problem`);
        a manifest without ``patch_size`` takes its network's."""
        pre, inference = manifest["preprocessing"], manifest.get("inference") or {}
        patch = pre.get("patch_size") or manifest["architecture"]["config"]["patch_size"]
        return cls(
            patch_size=patch,
            resolution=pre["resolution_mm"],
            crop_size=pre.get("crop_size"),
            intensity=pre.get("intensity") or {},
            threshold=inference.get("threshold", DEFAULT_THRESHOLD),
            overlap=inference.get("overlap", DEFAULT_OVERLAP),
            blend=str(inference.get("blend", DEFAULT_BLEND)),
            orientation=str(pre.get("orientation", "RPI")),
            contrasts=tuple(manifest.get("contrasts", ())),
            window=inference.get("window"),
        )

    def with_overrides(self, config: Any, only: tuple[str, ...] | None = None) -> ModelPlan:
        """This plan with the run's overrides (``config.resolution``, ``crop_size``, ``threshold``,
        ``overlap``; ``only``: some of them) where they are set: the one place they are applied."""
        names = OVERRIDES if only is None else {k: OVERRIDES[k] for k in only}
        changes = {name: value for attr, name in names.items() if (value := getattr(config, attr, None)) is not None}
        return replace(self, **changes) if changes else self

    def replace(self, **changes: Any) -> ModelPlan:
        """A copy with ``changes`` (e.g. the intensity parameters fine-tuning measured)."""
        return replace(self, **changes)

    @property
    def inference_window(self) -> tuple[int, ...]:
        """The sliding window of inference: ``window`` when set, else the training patch."""
        return self.patch_size if self.window is None else self.window

    @property
    def intensity_params(self) -> dict[str, Any]:
        """The intensity parameters as a plain (JSON) dict."""
        return _thawed(self.intensity)

    def sections(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``preprocessing`` and ``inference`` sections of this plan (JSON-ready)."""
        pre: dict[str, Any] = {"orientation": self.orientation, "resolution_mm": self.resolution}
        if self.crop_size is not None:
            pre["crop_size"] = list(self.crop_size)
        pre.update(patch_size=list(self.patch_size), intensity=self.intensity_params)
        inference = {"threshold": self.threshold, "overlap": self.overlap, "blend": self.blend}
        if self.window is not None:
            inference["window"] = list(self.window)
        return {"preprocessing": pre, "inference": inference}

    def to_dict(self) -> dict[str, Any]:
        """Everything in the plan as JSON (a Nipype node's input; :meth:`from_dict` reads it)."""
        return {**self.sections(), "contrasts": list(self.contrasts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelPlan:
        """The plan that :meth:`to_dict` wrote."""
        return cls.from_manifest({**data, "architecture": {"config": {}}})
