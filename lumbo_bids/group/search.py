"""``group --search``: a cross-validated parameter search (subject-wise folds), each trial one
fine-tuning run of the group level's own code; writes ``group/search/``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ..errors import ExitCode

LOGGER = logging.getLogger("lumbo_bids.group")


def fold_runner(config, spec, raw: list):
    """``run_fold(params, train_subjects, val_subjects, fold) -> mean validation Dice``: one
    fine-tuning of the search, with the group level's own code (picklable for Ray)."""
    work = Path(config.work_dir) / "group_search" / config.run_uuid

    def run_fold(params: dict, train_subjects: list, val_subjects: list, fold: int) -> float:
        from ..model.artifact import load_artifact
        from ..model.selection import SHIPPED_SEGMENTATION
        from ..training.finetune import fine_tune
        from .fine_tune import train_config

        start = config.init_model or SHIPPED_SEGMENTATION  # "shipped": this run's starting model
        init = load_artifact(start if params["init_model"] == "shipped" else params["init_model"])
        train_raw = [c for c in raw if c.subject in train_subjects]
        val_raw = [c for c in raw if c.subject in val_subjects]
        key = f"{hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]}_fold{fold}"
        cfg = train_config(
            init, epochs=int(params["epochs"]), steps_per_epoch=spec.steps_per_epoch, batch_size=spec.batch_size,
            learning_rate=float(params["learning_rate"]), loss=params["loss"], freeze=params["freeze"],
            early_stopping_patience=0, seed=spec.seed, augmentation_strength=float(params["augmentation"]),
            patch_size=params["patch_size"], val_patches_per_case=2,
        )  # fmt: skip
        data, state = work / key / "data", work / key / "training"
        tuned = fine_tune(
            init.build_model,
            train_raw,
            val_raw,
            cfg,
            data,
            state,
            intensity=init.plan.intensity_params,
            plan=init.plan,
            progress=False,
        )
        return float(np.mean(list(tuned.validation_dice.values())))

    return run_fold


def run_search(config, spec, raw: list) -> ExitCode:
    """Cross-validated parameter search; writes ``group/search/``."""
    from ..reports.search import write_search_outputs
    from ..training.search import run_search_local, run_search_ray

    subjects = sorted({c.subject for c in raw})
    run_fold = fold_runner(config, spec, raw)
    if config.ray_address:
        storage = Path(config.work_dir) / "group_search" / config.run_uuid / "ray"
        results = run_search_ray(spec, subjects, run_fold, config.ray_address, storage)
    else:
        results = run_search_local(spec, subjects, run_fold)
    paths = write_search_outputs(results, config.output_dir / "group" / "search", spec)
    LOGGER.info(
        "search: %d trial(s); best configuration in %s (use: group --config-file %s)", len(results), paths["best"], paths["best"]
    )
    return ExitCode.OK
