"""Fine-tuning across subjects: split, intensity landmarks, evaluation, training, artifact.

Used by the group level (``run.py BIDS OUT group``) and by ``scripts/train_base_model.py``
(which makes the shipped model with the very same code). Inputs are preprocessed cases (the
participant level's per-slice crops around the centerline, raw intensities, with the manual
mask cropped the same way).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InvalidInputError, UsageError

LOGGER = logging.getLogger("lumbo_bids.group")


@dataclass(frozen=True)
class RawCase:
    """One preprocessed image with its manual mask (cropped stacks, raw intensities)."""

    subject: str
    name: str
    contrast: str
    image: Path  # .npy float32 (sx, sy, nz)
    mask: Path  # .npy uint8


def split_subjects(
    subjects: list[str], fraction: float = 0.25, explicit: list[str] | None = None, seed: int = 42
) -> tuple[list[str], list[str]]:
    """Subject-wise train/validation split (never a patch- or image-level split)."""
    subjects = sorted(set(subjects))
    if explicit:
        unknown = sorted(set(explicit) - set(subjects))
        if unknown:
            raise UsageError(
                f"--validation-subjects {', '.join(unknown)} have no image with a manual mask "
                f"(subjects with masks: {', '.join(subjects)})",
            )
        val = sorted(set(explicit))
    else:
        if len(subjects) < 2:
            raise InvalidInputError(
                f"fine-tuning needs at least 2 subjects with masks (manual, or automatic rated pass) for a subject-wise "
                f"validation split; found {len(subjects)} ({', '.join(subjects) or 'none'})",
            )
        n_val = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
        rng = np.random.default_rng(seed)
        val = sorted(rng.choice(subjects, size=n_val, replace=False).tolist())
    train = [s for s in subjects if s not in val]
    if not train:
        raise UsageError("every subject is in the validation set: nothing left to train on")
    return train, val


def learn_intensity(cases: list[RawCase], intensity: dict | None = None) -> dict:
    """The intensity parameters for training on ``cases``.

    ``robust`` (or ``percentile``) standardisation learns nothing and is returned as it is;
    ``nyul`` (the default when none is given, the recipe of older models) learns the landmarks
    from the training images (inside the cropped field of view).
    """
    from ..intensity import DEFAULT_PERCENTILES, image_landmarks, learn_standard_scale

    if intensity and intensity.get("method") in ("robust", "percentile"):
        return dict(intensity)
    landmarks = [image_landmarks(np.load(c.image, mmap_mode="r")) for c in cases]
    standard = learn_standard_scale(landmarks)
    return {"method": "nyul", "percentiles": list(DEFAULT_PERCENTILES), "standard": np.asarray(standard).tolist()}


def standardise_cases(cases: list[RawCase], intensity: dict, out_dir: Path) -> list:
    """Write each case standardised with ``intensity`` as ``TrainingCase`` .npy files."""
    from ..intensity import apply_intensity
    from .cases import TrainingCase

    out_dir.mkdir(parents=True, exist_ok=True)
    result = []
    for case in cases:
        image = out_dir / f"{case.name}_image.npy"
        mask = out_dir / f"{case.name}_mask.npy"
        np.save(image, apply_intensity(np.load(case.image), intensity).astype(np.float32))
        np.save(mask, (np.load(case.mask) > 0).astype(np.uint8))
        result.append(TrainingCase(subject=case.subject, name=case.name, image=image, mask=mask))
    return result


def evaluate_cases(model, cases: list[RawCase], plan) -> dict[str, float]:
    """Dice of ``model`` against each case's manual mask on the cropped grid, segmented by the
    participant level's :class:`~lumbo_bids.model.predictor.Predictor` with ``plan``
    (a :class:`~lumbo_bids.plan.ModelPlan`)."""
    from ..metrics import dice
    from ..model.predictor import Predictor

    predictor = Predictor(model, plan)
    return {case.name: float(dice(predictor.segment(np.load(case.image)), np.load(case.mask) > 0)) for case in cases}


@dataclass(frozen=True)
class FineTuned:
    """What :func:`fine_tune` returns: the training run (its model holds the best weights), the
    Nyúl landmarks learned on the training images, and the Dice of each validation image."""

    result: Any  # lumbo_bids.training.trainer.TrainResult
    intensity: dict
    validation_dice: dict[str, float]


def fine_tune(
    model_fn, train_raw: list[RawCase], val_raw: list[RawCase], cfg, data_dir: Path, run_dir: Path,
    intensity: dict | None = None, synthetic_cases: tuple = (), plan=None, **train_kwargs,
) -> FineTuned:  # fmt: skip
    """Standardise both sets into ``data_dir`` with ``intensity`` (Nyúl landmarks learned on
    ``train_raw`` when it asks for them, or when there is none), train on them and on
    ``synthetic_cases`` (:class:`~lumbo_bids.training.cases.TrainingCase` label maps, see
    :mod:`lumbo_bids.training.synth`) with :func:`lumbo_bids.training.trainer.train` in ``run_dir``,
    and score on ``val_raw`` as the participant level would segment them (:func:`evaluate_cases`
    with ``plan``, a :class:`~lumbo_bids.plan.ModelPlan` whose patch size and intensity are
    replaced by ``cfg``'s and the learned ones; default settings when None)."""
    from ..plan import ModelPlan
    from .trainer import train

    intensity = learn_intensity(train_raw, intensity)
    train_cases = standardise_cases(train_raw, intensity, data_dir) + list(synthetic_cases)
    val_cases = standardise_cases(val_raw, intensity, data_dir) or list(synthetic_cases)  # synthetic only: pick on them
    result = train(model_fn, train_cases, val_cases, cfg, run_dir, **train_kwargs)
    plan = (plan or ModelPlan(cfg.patch_size)).replace(patch_size=tuple(cfg.patch_size), intensity=intensity)
    return FineTuned(result, intensity, evaluate_cases(result.model, val_raw, plan))


def device_description() -> str:
    from .devices import accelerators

    gpus = accelerators()
    return f"{len(gpus)} GPU(s)" if gpus else f"CPU ({platform.processor() or platform.machine()})"


def backend_versions() -> dict[str, str]:
    """``{"keras": ..., "backend": "tensorflow", "tensorflow": ...}``: Keras and the backend it ran on."""
    import importlib

    import keras

    backend = keras.backend.backend()
    return {"keras": keras.__version__, "backend": backend, backend: importlib.import_module(backend).__version__}


def model_card(**fields) -> dict:
    """A JSON-serialisable record of how a model was made."""
    return json.loads(
        json.dumps(
            {
                **fields,
                "software": {"lumbo_bids": __version__, **backend_versions()},
                "device": device_description(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            default=str,
        )
    )
