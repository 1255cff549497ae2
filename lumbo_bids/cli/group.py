"""Group level: fine-tune the segmentation model on every subject that has manual masks."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import ExitCode, LumboError

LOGGER = logging.getLogger("lumbo_bids.group")


def run_group(config, inputs: dict) -> ExitCode:
    """Preprocess (cached), split by subject, fine-tune, evaluate, write the artifact and report."""
    from ..reports.group import write_group_summaries
    from .participant import configure_nipype, run_workflow

    anats = masked_images(inputs)  # checked by the CLI (check_group_inputs) before anything is written
    for path in write_group_summaries(config.output_dir):  # participant-level results, if any
        LOGGER.info("group: wrote %s", path)
    from ..model.artifact import load_artifact
    from ..model.finetune import RawCase, split_subjects
    from ..model.selection import SHIPPED_SEGMENTATION

    init_path = config.init_model or SHIPPED_SEGMENTATION
    init = load_artifact(init_path)
    pre = init.manifest["preprocessing"]
    resolution = config.resolution or float(pre["resolution_mm"])
    crop_size = tuple(config.crop_size or pre["crop_size"])
    search_spec = None
    if config.search is not None:
        from ..model.search import load_search_spec, subject_folds

        search_spec = load_search_spec(config.search)
        subject_folds([a.subject for a in anats], search_spec.folds, search_spec.seed)  # enough subjects?
    else:
        train_subjects, val_subjects = split_subjects(
            [a.subject for a in anats], config.validation_fraction, config.validation_subjects, config.random_seed
        )
        LOGGER.info("group: %d image(s) with masks; train %s; validate %s", len(anats), train_subjects, val_subjects)

    configure_nipype(config)
    from ..workflows.group import init_group_preproc_wf, preproc_outputs

    workflow = init_group_preproc_wf(config, anats, resolution, crop_size)
    try:
        exec_graph = run_workflow(workflow, config, preproc_progress(anats))
    except RuntimeError:
        raise LumboError(
            f"preprocessing failed for some images; crash files in {config.output_dir / 'group' / 'log' / config.run_uuid}",
            ExitCode.FAILURE,
        ) from None
    outputs = preproc_outputs(exec_graph, anats)
    raw = [
        RawCase(a.subject, a.stem, a.contrast, Path(outputs[a.path].out_stack), Path(outputs[a.path].mask_stack)) for a in anats
    ]
    if search_spec is not None:
        return run_search(config, search_spec, raw)
    train_raw = [c for c in raw if c.subject in train_subjects]
    val_raw = [c for c in raw if c.subject in val_subjects]
    return fine_tune_and_report(config, init, train_raw, val_raw, resolution, crop_size)


def preproc_progress(anats: list):
    """One line when each image starts and when it is preprocessed."""
    from ..workflows.base import anat_wf_name
    from .progress import ImageProgress

    return ImageProgress({anat_wf_name(a): f"sub-{a.subject} {a.contrast}" for a in anats}, lambda key: "preprocessed")


def masked_images(inputs: dict) -> list:
    return [anat for items in inputs.values() for anat in items if anat.mask is not None]


def check_group_inputs(config, inputs: dict) -> None:
    """Fine-tuning needs images with masks, all present on disk (exit 66 otherwise)."""
    from ..utils.bids import missing_content_message, unavailable_files

    anats = masked_images(inputs)
    if not anats:
        raise LumboError(
            f"no selected image has a manual mask under {config.labels_dir} (expected sub-XX/anat/<source>_label-SC_seg.nii.gz)",
            ExitCode.NO_INPUT,
        )
    absent = [path for anat in anats for path in unavailable_files(anat)]
    if absent:
        more = f" (and {len(absent) - 1} more file(s))" if len(absent) > 1 else ""
        raise LumboError(missing_content_message(absent[0]) + more, ExitCode.NO_INPUT)


def fine_tune_and_report(config, init, train_raw, val_raw, resolution, crop_size) -> ExitCode:
    from ..derivatives import atomic_write_json, atomic_write_text
    from ..model.artifact import save_artifact
    from ..model.finetune import evaluate_cases, fine_tune, model_card
    from ..model.network import UNet3DConfig, build_unet3d
    from ..model.training import TrainConfig, plot_history, with_image_dice
    from .progress import epoch_progress, training_outcome

    group_dir = config.output_dir / "group"
    state_dir = group_dir / "training"
    data_dir = config.work_dir / "group_data" / config.run_uuid
    arch = init.manifest["architecture"]
    patch_size = tuple(config.patch_size or init.manifest["preprocessing"]["patch_size"])

    inference = replace(init.plan, patch_size=patch_size)
    before = evaluate_cases(init.build_model(), val_raw, inference)
    LOGGER.info("validation Dice before fine-tuning: %s", _fmt(before))

    def model_fn():
        if config.from_scratch:
            return build_unet3d(UNet3DConfig.from_dict(arch["config"]))
        return init.build_model()

    cfg = TrainConfig(
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        loss=config.loss,
        freeze=config.freeze or ("encoder" if config.freeze_encoder else "none"),
        early_stopping_patience=config.patience,
        seed=config.random_seed,
        augmentation_strength=config.augmentation,
        patch_size=patch_size,
    )
    started = time.time()
    plan = None if config.from_scratch else init.manifest["preprocessing"].get("intensity")
    tuned = fine_tune(
        model_fn, train_raw, val_raw, cfg, data_dir, state_dir, intensity_plan=plan, inference=inference, resume=config.resume,
        progress=False, callbacks=[epoch_progress(cfg.epochs, cfg.steps_per_epoch)],  # lines, not Keras' progress bar
    )  # fmt: skip
    result, intensity, after = tuned.result, tuned.intensity, tuned.validation_dice
    patience = cfg.early_stopping_patience
    LOGGER.info("%s", training_outcome(result.epochs_run, cfg.epochs, patience, result.best_epoch, result.best_val_dice))
    LOGGER.info("validation Dice after fine-tuning: %s", _fmt(after))

    manifest = {
        **{k: v for k, v in init.manifest.items() if k not in {"files", "training", "created"}},
        "name": f"{init.manifest.get('name', 'model')}-finetuned",
        "preprocessing": {
            **init.manifest["preprocessing"],
            "intensity": intensity,
            "resolution_mm": resolution,
            "crop_size": list(crop_size),
        },
        "training": model_card(
            initial_model={
                "path": str(init.path),
                "name": init.manifest.get("name"),
                "checksum": init.checksum,
                "from_scratch": config.from_scratch,
            },
            train_subjects=sorted({c.subject for c in train_raw}),
            validation_subjects=sorted({c.subject for c in val_raw}),
            train_images=[c.name for c in train_raw],
            validation_images=[c.name for c in val_raw],
            seed=config.random_seed,
            hyperparameters=cfg.to_dict(),
            epochs_run=result.epochs_run,
            seconds=round(time.time() - started, 1),
            validation_dice_before=before,
            validation_dice_after=after,
        ),
    }
    artifact_path = save_artifact(result.model, group_dir / "model", manifest)
    atomic_write_json(group_dir / "model_card.json", manifest["training"])
    rows = ["image\tsubject\tdice_before\tdice_after"] + [
        f"{c.name}\t{c.subject}\t{before[c.name]:.4f}\t{after[c.name]:.4f}" for c in val_raw
    ]
    atomic_write_text(group_dir / "validation_dice.tsv", "\n".join(rows) + "\n")
    metrics_tsv = state_dir / "metrics.tsv"
    if metrics_tsv.exists():
        start, kept = (float(np.mean(list(scores.values()))) for scores in (before, after))
        table = with_image_dice(metrics_tsv, start, kept, result.best_epoch)
        plot_history(atomic_write_text(group_dir / "metrics.tsv", table), group_dir / "training_curves.png")
    LOGGER.info("fine-tuned model: %s (use: participant --model %s)", artifact_path, artifact_path)
    return ExitCode.OK


def fold_runner(config, spec, raw: list):
    """``run_fold(params, train_subjects, val_subjects, fold) -> mean validation Dice``: one
    fine-tuning of the search, with the group level's own code (picklable for Ray)."""
    work = Path(config.work_dir) / "group_search" / config.run_uuid

    def run_fold(params: dict, train_subjects: list, val_subjects: list, fold: int) -> float:
        from ..model.artifact import load_artifact
        from ..model.finetune import fine_tune
        from ..model.selection import SHIPPED_SEGMENTATION
        from ..model.training import TrainConfig

        init = load_artifact(SHIPPED_SEGMENTATION if params["init_model"] == "shipped" else params["init_model"])
        train_raw = [c for c in raw if c.subject in train_subjects]
        val_raw = [c for c in raw if c.subject in val_subjects]
        key = f"{hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]}_fold{fold}"
        cfg = TrainConfig(
            epochs=int(params["epochs"]), steps_per_epoch=spec.steps_per_epoch, batch_size=spec.batch_size,
            learning_rate=float(params["learning_rate"]), loss=params["loss"], freeze=params["freeze"],
            early_stopping_patience=0, seed=spec.seed, augmentation_strength=float(params["augmentation"]),
            patch_size=tuple(params["patch_size"]), val_patches_per_case=2,
        )  # fmt: skip
        plan = init.manifest["preprocessing"].get("intensity")
        data, state = work / key / "data", work / key / "training"
        tuned = fine_tune(
            init.build_model, train_raw, val_raw, cfg, data, state, intensity_plan=plan, inference=init.plan, progress=False
        )
        return float(np.mean(list(tuned.validation_dice.values())))

    return run_fold


def run_search(config, spec, raw: list) -> ExitCode:
    """Cross-validated parameter search; writes ``group/search/``."""
    from ..model.search import run_search_local, run_search_ray
    from ..reports.search import write_search_outputs

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


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in scores.items()) + f" (mean {np.mean(list(scores.values())):.3f})"
