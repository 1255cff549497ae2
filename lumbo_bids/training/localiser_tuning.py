"""Training and fine-tuning the cord localiser from manual masks (their centerlines as heat-map targets).

The same code makes the shipped localiser (``scripts/train_base_model.py``) and fine-tunes it at
the group level: :func:`prepare_localiser_case` turns an image and its manual mask into the
localiser's input (the whole field of view, resampled, normalised by the artifact's plan),
:func:`localiser_train_config` holds the recipe, :func:`centerline_errors` scores a localiser
as the participant level uses it (heat-map, then :func:`~lumbo_bids.centerline.centerline_from_heatmap`)
against each mask's centerline, and :func:`fine_tune_localiser` does the group level's run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LOGGER = logging.getLogger("lumbo_bids.group")

#: the shipped localiser's grid and window (scripts/train_base_model.py)
LOCALISER_RESOLUTION = 1.0
LOCALISER_PATCH = (64, 64)


def prepare_localiser_case(subject: str, name: str, data, affine, mask, resolution: float, out_dir: Path, plan=None):
    """A :class:`~lumbo_bids.training.cases.TrainingCase` of the whole field of view at ``resolution``
    (RPI, linear; the mask by the mask rule), normalised as the localiser's ``plan`` says."""
    from ..model.localise import localiser_input
    from ..preprocess import Preprocessor
    from .cases import TrainingCase

    fov, fov_mask, _ = Preprocessor(resolution).resample(data, affine, mask)
    out_dir.mkdir(parents=True, exist_ok=True)
    image, cord = out_dir / f"{name}_fov.npy", out_dir / f"{name}_fov_mask.npy"
    np.save(image, localiser_input(fov, plan))
    np.save(cord, fov_mask.astype(np.uint8))
    return TrainingCase(subject=subject, name=name, image=image, mask=cord)


def localiser_cases(anats: list, resolution: float, out_dir: Path, plan=None) -> list:
    """:func:`prepare_localiser_case` of each BIDS image with a manual mask (``AnatInput``)."""
    from ..utils.images import read_volume

    cases = []
    for anat in anats:
        data, affine, _ = read_volume(anat.path)
        mask, _, _ = read_volume(anat.mask)
        cases.append(prepare_localiser_case(anat.subject, anat.stem, data, affine, mask, resolution, out_dir, plan))
    return cases


def localiser_train_config(
    epochs: int, steps_per_epoch: int, seed: int = 42, learning_rate: float = 1e-3, domain_randomisation: float = 1.0,
    patch_size=LOCALISER_PATCH, augmentation: float = 1.0, thick_axes: str = "axial",
):  # fmt: skip
    """The localiser recipe (heat-map windows of ``patch_size``, sigma 2 voxels, Dice+BCE, cosine;
    ``thick_axes``: :data:`lumbo_bids.training.augment.THICK_AXES`)."""
    from .trainer import TrainConfig

    return TrainConfig(
        task="localisation", epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=16, learning_rate=learning_rate,
        lr_schedule="cosine", loss="dice_bce", early_stopping_patience=0, seed=seed, augmentation_strength=augmentation,
        domain_randomisation=domain_randomisation, patch_size=tuple(patch_size), heatmap_sigma=2.0, cord_probability=0.8,
        val_patches_per_case=16, thick_axes=thick_axes,
    )  # fmt: skip


def centerline_errors(model, cases: list, resolution: float, batch_size: int = 16) -> dict[str, dict]:
    """``{case: {"mean_mm", "max_mm"}}``: the localiser's centerline against the mask's, on the slices
    with cord (both ``None`` when the heat-map finds no cord at all)."""
    from ..centerline import centerline_from_heatmap, centerline_from_mask
    from ..centerline_error import centerline_error
    from ..model.inference import keras_predict_fn, predict_slices

    predict = keras_predict_fn(model, batch_size)
    zooms = (resolution,) * 3
    errors = {}
    for case in cases:
        mask = np.load(case.mask) > 0
        heat = np.clip(predict_slices(predict, np.load(case.image), batch_size), 0.0, 1.0)
        try:
            found = centerline_from_heatmap(heat, zooms=zooms)
        except ValueError:
            LOGGER.warning("localiser: no cord found in %s", case.name)
            errors[case.name] = {"mean_mm": None, "max_mm": None}
            continue
        mean, worst = centerline_error(found, centerline_from_mask(mask), zooms[:2], mask.any(axis=(0, 1)))
        errors[case.name] = {"mean_mm": round(mean, 3), "max_mm": round(worst, 3)}
    return errors


@dataclass(frozen=True)
class LocaliserTuned:
    """What :func:`fine_tune_localiser` returns: the training run (best weights), the starting
    artifact, and the centerline error of each validation image before and after."""

    result: Any  # lumbo_bids.training.trainer.TrainResult
    init: Any  # lumbo_bids.model.artifact.ModelArtifact
    cfg: Any  # lumbo_bids.training.trainer.TrainConfig
    before: dict[str, dict]
    after: dict[str, dict]


def fine_tune_localiser(
    init, train_anats: list, val_anats: list, cfg, data_dir: Path, run_dir: Path, **train_kwargs
) -> LocaliserTuned:
    """Fine-tune the localiser artifact ``init`` on the masks' centerlines of ``train_anats``
    (best epoch on ``val_anats``' heat-map Dice), scoring the centerline error of ``val_anats``
    before and after."""
    from .trainer import train

    resolution, intensity = init.plan.resolution, init.plan.intensity_params
    train_cases = localiser_cases(train_anats, resolution, data_dir, intensity)
    val_cases = localiser_cases(val_anats, resolution, data_dir, intensity)
    before = centerline_errors(init.build_model(), val_cases, resolution)
    LOGGER.info("localiser centerline error before fine-tuning: %s", format_errors(before))
    result = train(init.build_model, train_cases, val_cases, cfg, run_dir, **train_kwargs)
    after = centerline_errors(result.model, val_cases, resolution)
    LOGGER.info("localiser centerline error after fine-tuning: %s", format_errors(after))
    return LocaliserTuned(result, init, cfg, before, after)


def format_errors(errors: dict[str, dict]) -> str:
    """``name=1.2/3.4 mm`` (mean/max) for each case."""
    shown = (
        f"{k}={v['mean_mm']:.1f}/{v['max_mm']:.1f} mm" if v["mean_mm"] is not None else f"{k}=no cord" for k, v in errors.items()
    )
    return ", ".join(shown) + " (mean/max)"


def localiser_manifest(tuned: LocaliserTuned, contrasts: list[str], card: dict) -> dict:
    """The fine-tuned localiser's manifest: the starting one's, renamed, with ``card`` as its training record."""
    init = tuned.init.manifest
    return {
        **{k: v for k, v in init.items() if k not in {"files", "training", "created"}},
        "name": f"{init.get('name', 'localiser')}-finetuned",
        "contrasts": sorted(set(init.get("contrasts", [])) | set(contrasts)),
        "training": card,
    }
