"""Fine-tune the segmentation model (and the localiser) on the preprocessed masked images and write
``group/model``, its model card, ``validation_dice.tsv`` and the training curves."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..accepted import label_source
from ..errors import ExitCode

LOGGER = logging.getLogger("lumbo_bids.group")


def fine_tune_and_report(config, init, train_raw, val_raw, plan, split=None) -> ExitCode:
    """Fine-tune the segmentation network (and, unless ``--no-localiser-finetune``, the localiser on
    ``split``: the training and validation images, ``AnatInput``s); write ``group/model`` (the
    localiser nested in it), the model card, ``validation_dice.tsv`` and the training curves.
    ``plan``: the starting model's, with this run's resolution and crop; the fine-tuned model's
    is it with the intensity parameters learned."""
    from ..derivatives import atomic_write_json
    from .localiser import save_models, select_localiser, tune_localiser

    group_dir = config.output_dir / "group"
    cfg = train_config(init, **run_settings(config))
    started = time.time()
    tuned, before = tune_segmentation(config, init, train_raw, val_raw, cfg, group_dir / "training", "segmentation")
    seconds = round(time.time() - started, 1)
    tried = tune_localiser(config, *split) if config.localiser_finetune and split else None
    localiser = select_localiser(config, tried)  # None when it came out worse than the shipped one
    card = segmentation_card(config, init, train_raw, val_raw, cfg, tuned, before, seconds, tried, kept=localiser is not None)
    if split:  # where each image's label came from: a manual mask, or an automatic one rated pass
        card["labels"] = {a.stem: label_source(a, config.output_dir) for a in [*split[0], *split[1]]}
    manifest = {
        **{k: v for k, v in init.manifest.items() if k not in {"files", "training", "created"}},
        "name": f"{init.manifest.get('name', 'model')}-finetuned",
        **plan.replace(intensity=tuned.intensity).sections(),
        "training": card,
    }
    artifact_path = save_models(tuned.result.model, manifest, localiser, group_dir / "model")
    atomic_write_json(group_dir / "model_card.json", manifest["training"])
    write_validation_table(group_dir / "validation_dice.tsv", val_raw, before, tuned.validation_dice, tried)
    write_training_curves(group_dir, before, tuned)
    LOGGER.info("fine-tuned model: %s (use: participant --model %s)", artifact_path, artifact_path)
    return ExitCode.OK


def run_settings(config) -> dict:
    """This run's fine-tuning settings (command line > config file > built-in default), by
    :class:`~lumbo_bids.training.trainer.TrainConfig` field; ``patch_size`` None: the model's."""
    return {
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "loss": config.loss,
        "freeze": config.freeze or ("encoder" if config.freeze_encoder else "none"),
        "early_stopping_patience": config.patience,
        "seed": config.random_seed,
        "augmentation_strength": config.augmentation,
        "patch_size": config.patch_size,
    }


def train_config(init, **settings):
    """The group level's one way to make fine-tuning settings (a run's :func:`run_settings`, or a
    search trial's): a :class:`~lumbo_bids.training.trainer.TrainConfig`, the patch size the
    starting model's unless given."""
    from ..training.trainer import TrainConfig

    patch = settings.pop("patch_size", None)
    return TrainConfig(**settings, patch_size=tuple(patch or init.plan.patch_size))


def starting_intensity(init, from_scratch: bool = False) -> dict | None:
    """The intensity standardisation fine-tuning starts from: the starting model's, or None
    (from scratch: Nyul landmarks learned on the training images)."""
    return None if from_scratch else init.plan.intensity_params


def tune_segmentation(config, init, train_raw, val_raw, cfg, state_dir: Path, key: str, resume=None, before=None):
    """Score ``init`` on ``val_raw`` (unless ``before`` has its scores), fine-tune it (one line per
    epoch) and score it again: ``(FineTuned, Dice before)``. ``key`` names the run's data folder
    in the work dir; ``resume`` defaults to ``--resume``."""
    from ..engine.progress import epoch_progress, training_outcome
    from ..model.architectures import ARCHITECTURES
    from ..training.finetune import evaluate_cases, fine_tune

    plan = init.plan.replace(patch_size=cfg.patch_size)
    if before is None:
        before = evaluate_cases(init.build_model(), val_raw, plan)
        LOGGER.info("validation Dice before fine-tuning: %s", _fmt(before))

    def model_fn():
        if config.from_scratch:  # the initial model's architecture (a network or an ensemble), new weights
            return ARCHITECTURES[init.architecture](dict(init.architecture_config))
        return init.build_model()

    intensity = starting_intensity(init, config.from_scratch)
    data_dir = config.work_dir / "group_data" / config.run_uuid / key
    tuned = fine_tune(
        model_fn, train_raw, val_raw, cfg, data_dir, state_dir, intensity=intensity, plan=plan,
        resume=config.resume if resume is None else resume, progress=False,
        callbacks=[epoch_progress(cfg.epochs, cfg.steps_per_epoch)],  # lines, not Keras' progress bar
    )  # fmt: skip
    result = tuned.result
    LOGGER.info(
        "%s",
        training_outcome(result.epochs_run, cfg.epochs, cfg.early_stopping_patience, result.best_epoch, result.best_val_dice),
    )
    LOGGER.info("validation Dice after fine-tuning: %s", _fmt(tuned.validation_dice))
    return tuned, before


def segmentation_card(config, init, train_raw, val_raw, cfg, tuned, before, seconds, localiser, kept=True) -> dict:
    """The model card: the split, the settings, the Dice before/after and the localiser's record
    (``localiser``: its fine-tuning run, if any; ``kept`` False: it was not shipped, and why)."""
    from ..training.finetune import model_card
    from .localiser import localiser_card, localiser_got_worse

    return model_card(
        initial_model={"path": str(init.path), "name": init.manifest.get("name"), "checksum": init.checksum, "from_scratch": config.from_scratch},
        train_subjects=sorted({c.subject for c in train_raw}),
        validation_subjects=sorted({c.subject for c in val_raw}),
        train_images=[c.name for c in train_raw],
        validation_images=[c.name for c in val_raw],
        seed=config.random_seed,
        hyperparameters=cfg.to_dict(),
        epochs_run=tuned.result.epochs_run,
        seconds=seconds,
        validation_dice_before=before,
        validation_dice_after=tuned.validation_dice,
        localiser=(
            localiser_card(localiser, None if kept else localiser_got_worse(localiser)) if localiser
            else {"fine_tuned": False, "used": "the shipped localiser"}
        ),
    )  # fmt: skip


def write_validation_table(path: Path, val_raw, before: dict, after: dict, localiser=None) -> Path:
    """``validation_dice.tsv``: Dice before/after, and the localiser's centerline error (mean and max, mm)."""
    from ..derivatives import atomic_write_text

    header = ["image", "subject", "dice_before", "dice_after"]
    if localiser:
        header += [f"centerline_{stat}_mm_{when}" for stat in ("mean", "max") for when in ("before", "after")]
    rows = ["\t".join(header)]
    for c in val_raw:
        row = [c.name, c.subject, f"{before[c.name]:.4f}", f"{after[c.name]:.4f}"]
        if localiser:
            errors = (localiser.before[c.name], localiser.after[c.name])
            row += [_mm(e[f"{stat}_mm"]) for stat in ("mean", "max") for e in errors]
        rows.append("\t".join(row))
    return atomic_write_text(path, "\n".join(rows) + "\n")


def write_training_curves(group_dir: Path, before: dict, tuned) -> None:
    """``group/metrics.tsv`` (with the whole-image Dice at the start and of the kept epoch) and its plot."""
    from ..derivatives import atomic_write_text
    from ..training.curves import plot_history
    from ..training.history import with_image_dice

    metrics_tsv = group_dir / "training" / "metrics.tsv"
    if metrics_tsv.exists():
        start, kept = (float(np.mean(list(scores.values()))) for scores in (before, tuned.validation_dice))
        table = with_image_dice(metrics_tsv, start, kept, tuned.result.best_epoch)
        plot_history(atomic_write_text(group_dir / "metrics.tsv", table), group_dir / "training_curves.png")


def _mm(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in scores.items()) + f" (mean {np.mean(list(scores.values())):.3f})"
