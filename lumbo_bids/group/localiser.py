"""Group level, the localiser's part: fine-tune it on the masks' centerlines, record it, and save
it inside the segmentation artifact (``group/model/localiser``) that ``participant --model`` takes."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

LOGGER = logging.getLogger("lumbo_bids.group")
#: the sub-folder of the segmentation artifact that holds its localiser
LOCALISER_DIR = "localiser"
#: how much worse (mm) than the starting localiser a fine-tuned one may be on the validation images
#: and still be kept: its mean and its largest centerline error
MEAN_TOLERANCE_MM, MAX_TOLERANCE_MM = 0.1, 1.0


def localiser_got_worse(tuned) -> str | None:
    """Why the fine-tuned localiser is worse than where it started on the validation images (its
    centerline error, mean or largest, beyond the tolerances; or no cord found where the starting
    one found it), or None when it is not."""
    for name, before in tuned.before.items():
        after = tuned.after.get(name, {"mean_mm": None, "max_mm": None})
        if before["mean_mm"] is None:
            continue
        if after["mean_mm"] is None:
            return f"it finds no cord in {name}"
        if after["mean_mm"] > before["mean_mm"] + MEAN_TOLERANCE_MM or after["max_mm"] > before["max_mm"] + MAX_TOLERANCE_MM:
            return (
                f"its centerline error on {name} grew from {before['mean_mm']:.1f}/{before['max_mm']:.1f} to "
                f"{after['mean_mm']:.1f}/{after['max_mm']:.1f} mm (mean/max)"
            )
    return None


def select_localiser(config, tuned):
    """The fine-tuned localiser to ship, or None to keep the starting one (with a warning) when
    fine-tuning made it worse on the validation images, unless ``--keep-worse-localiser``."""
    if tuned is None:
        return None
    worse = localiser_got_worse(tuned)
    if worse is None or config.keep_worse_localiser:
        return tuned
    LOGGER.warning(
        "localiser: the fine-tuned localiser is worse than the shipped one (%s): the shipped localiser is kept "
        "(--keep-worse-localiser ships it anyway)", worse,
    )  # fmt: skip
    return None


def tune_localiser(config, train_anats: list, val_anats: list):
    """Fine-tune the shipped localiser on ``train_anats``' masks (best epoch on ``val_anats``), one
    line per epoch: a :class:`~lumbo_bids.training.localiser_tuning.LocaliserTuned`."""
    from .. import options
    from ..model.artifact import load_artifact
    from ..model.selection import SHIPPED_LOCALISER
    from ..training.localiser_tuning import fine_tune_localiser, localiser_train_config

    init = load_artifact(SHIPPED_LOCALISER)
    patch = init.plan.patch_size
    cfg = localiser_train_config(
        config.localiser_epochs, config.localiser_steps, seed=config.random_seed,
        learning_rate=options.LOCALISER_LEARNING_RATE, patch_size=patch, augmentation=config.augmentation,
    )  # fmt: skip
    LOGGER.info(
        "localiser: fine-tuning on %d image(s) for %d epoch(s) of %d steps", len(train_anats), cfg.epochs, cfg.steps_per_epoch
    )
    data_dir = config.work_dir / "group_data" / config.run_uuid / "localiser"
    run_dir = config.output_dir / "group" / "training_localiser"
    started = time.monotonic()
    tuned = fine_tune_localiser(
        init, train_anats, val_anats, cfg, data_dir, run_dir, progress=False, callbacks=[localiser_progress(cfg.epochs)]
    )
    LOGGER.info("localiser: %d epoch(s) in %.0f s; kept epoch %d (heat-map validation Dice %.3f)",
                tuned.result.epochs_run, time.monotonic() - started, tuned.result.best_epoch + 1, tuned.result.best_val_dice)  # fmt: skip
    return tuned


def localiser_progress(epochs: int):
    """A Keras callback: ``localiser epoch 2/5 · loss 0.41 · Dice 0.62 · validation Dice 0.58 (best) · 3 s``."""
    import keras

    from ..engine.progress import epoch_line

    class LocaliserEpochs(keras.callbacks.Callback):
        best, started = -math.inf, 0.0

        def resume_best(self, best: float) -> None:
            self.best = best

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            logs = logs or {}
            LOGGER.info("localiser %s", epoch_line(epoch, epochs, logs, self.best, time.monotonic() - self.started))
            self.best = max(self.best, float(logs.get("val_dice", -math.inf)))

    return LocaliserEpochs()


def _mean(errors: dict, stat: str) -> float | None:
    values = [e[stat] for e in errors.values() if e[stat] is not None]
    return round(sum(values) / len(values), 3) if values and len(values) == len(errors) else None


def localiser_card(tuned, not_kept: str | None = None) -> dict:
    """The segmentation model card's account of the localiser (JSON-ready); ``not_kept``: why a
    fine-tuned localiser was not shipped (:func:`localiser_got_worse`), its run still recorded."""
    rejected = {"used": "the shipped localiser", "not_kept": not_kept} if not_kept else {}
    return {
        "fine_tuned": not not_kept,
        "initial_model": {"path": str(tuned.init.path), "name": tuned.init.manifest.get("name"), "checksum": tuned.init.checksum},
        "hyperparameters": tuned.cfg.to_dict(),
        "epochs_run": tuned.result.epochs_run,
        "kept_epoch": tuned.result.best_epoch + 1,
        "seconds": round(tuned.result.seconds, 1),
        "heatmap_validation_dice": round(tuned.result.best_val_dice, 4) if math.isfinite(tuned.result.best_val_dice) else None,
        "centerline_error": (
            "in-plane distance (mm) between the localiser's centerline (heat-map, then the participant level's fit) and "
            "the manual mask's centerline, on the slices with cord, on the localiser's grid; null: no cord found"
        ),
        "centerline_error_mm_before": tuned.before,
        "centerline_error_mm_after": tuned.after,
        "mean_centerline_error_mm_before": _mean(tuned.before, "mean_mm"),
        "mean_centerline_error_mm_after": _mean(tuned.after, "mean_mm"),
        **rejected,
    }


def save_models(model, manifest: dict, localiser, out_dir: Path) -> Path:
    """Save the segmentation artifact at ``out_dir`` and, when given, the fine-tuned localiser in
    ``out_dir/localiser`` (referenced with its checksum from the segmentation manifest, so that
    :func:`lumbo_bids.model.selection.choose_localiser` uses it for images without a mask)."""
    from ..model.artifact import load_artifact, save_artifact
    from ..training.localiser_tuning import localiser_manifest

    if localiser is None:
        return save_artifact(model, out_dir, manifest)
    staging = out_dir.parent / f".{out_dir.name}-{LOCALISER_DIR}"
    card = {k: v for k, v in manifest["training"].items() if k != "localiser"} | {"localiser": localiser_card(localiser)}
    card = {"purpose": "cord localisation, fine-tuned with the segmentation model beside it", **card}
    save_artifact(localiser.result.model, staging, localiser_manifest(localiser, manifest.get("contrasts", []), card))
    saved = load_artifact(staging)
    entry = {"path": LOCALISER_DIR, "sha256": saved.checksum, "name": saved.manifest["name"]}
    try:
        path = save_artifact(model, out_dir, {**manifest, "localiser": entry})
        os.replace(staging, path / LOCALISER_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOGGER.info("fine-tuned localiser: %s", path / LOCALISER_DIR)
    return path
