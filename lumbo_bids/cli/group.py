"""Group level: fine-tune the segmentation model on every subject that has manual masks."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..accepted import ACCEPTED, label_source
from ..errors import ExitCode, LumboError, MissingInputError, UsageError, named

LOGGER = logging.getLogger("lumbo_bids.group")


def run_group(config, inputs: dict) -> ExitCode:
    """Preprocess (cached), split by subject, fine-tune, evaluate, write the artifact and report."""
    from ..reports.group import write_group_summaries

    anats, rated_fail = select_images(config, inputs)
    search_spec, train_subjects, val_subjects = plan_training(config, anats)  # checked before anything is written
    write_annotation_outputs(config, inputs, rated_fail)
    write_study_round(config, inputs, anats)
    for path in write_group_summaries(config.output_dir):  # participant-level results, if any (and to_correct)
        LOGGER.info("group: wrote %s", path)
    from ..model.artifact import load_artifact
    from ..model.selection import SHIPPED_SEGMENTATION

    init = load_artifact(config.init_model or SHIPPED_SEGMENTATION)
    pre = init.manifest["preprocessing"]
    resolution = config.resolution or float(pre["resolution_mm"])
    crop_size = tuple(config.crop_size or pre["crop_size"])
    if search_spec is None:
        LOGGER.info("group: %d image(s) with masks; train %s; validate %s", len(anats), train_subjects, val_subjects)

    raw = preprocess(config, anats, resolution, crop_size)
    if search_spec is not None:
        return run_search(config, search_spec, raw)
    train_raw = [c for c in raw if c.subject in train_subjects]
    val_raw = [c for c in raw if c.subject in val_subjects]
    if config.learning_curve:
        from .learning_curve import learning_curve_and_report

        return learning_curve_and_report(config, init, train_raw, val_raw)
    split = ([a for a in anats if a.subject in train_subjects], [a for a in anats if a.subject in val_subjects])
    return fine_tune_and_report(config, init, train_raw, val_raw, resolution, crop_size, split)


def plan_training(config, anats: list):
    """``(search spec, None, None)`` with ``--search``, else ``(None, training subjects,
    validation subjects)``; a one-line error when the options or the subjects do not allow it
    (``--search`` with ``--learning-curve``, a bad spec, too few subjects, an unknown
    ``--validation-subjects``)."""
    from ..model.finetune import split_subjects

    if config.search is not None and config.learning_curve:
        raise LumboError("--search and --learning-curve are separate runs: give one of them", ExitCode.USAGE)
    subjects = [a.subject for a in anats]
    if config.search is not None:
        from ..model.search import load_search_spec, subject_folds

        with named("--search"):
            search_spec = load_search_spec(config.search)
        subject_folds(subjects, search_spec.folds, search_spec.seed)  # enough subjects?
        return search_spec, None, None
    train, val = split_subjects(subjects, config.validation_fraction, config.validation_subjects, config.random_seed)
    return None, train, val


def select_images(config, inputs: dict) -> tuple[list, set[str]]:
    """The masked images to train on (masks checked by the CLI, check_group_inputs), less those
    rated ``fail`` in ``--qc-ratings``; and the names of every image rated ``fail``."""
    anats, excluded, rated_fail, partial = _rated_images(config, inputs)
    if excluded:
        LOGGER.warning("group: left out, rated fail in %s: %s", config.qc_ratings, ", ".join(a.stem for a in excluded))
    for anat, coverage in partial:
        LOGGER.warning("group: left out, %s %s (it would teach that the cord is background)", anat.mask, coverage.describe())
    accepted = [a.stem for a in anats if label_source(a, config.output_dir) == ACCEPTED]
    if accepted:
        LOGGER.info("group: %d accepted automatic mask(s) rated pass as labels: %s", len(accepted), ", ".join(accepted))
    _warn_unlabelled_contrasts(anats, rated_fail)
    return anats, rated_fail


def _warn_unlabelled_contrasts(anats: list, rated_fail: set[str]) -> None:
    """Say when images rated ``fail`` have a contrast (BIDS suffix) that no training label has:
    fine-tuning on the others may not help them (the rate-don't-draw run: the T2*w images rated
    fail got worse when only T1w and T2w masks were accepted)."""
    trained = {a.suffix for a in anats}
    unseen = sorted({name for name in rated_fail if name.rsplit("_", 1)[-1] not in trained})
    if unseen and trained:
        contrasts = sorted({name.rsplit("_", 1)[-1] for name in unseen})
        LOGGER.warning(
            "group: rated fail, with a contrast (%s) that no training label has: %s; fine-tuning on %s may not help "
            "them: correct their masks (group/to_correct/) and move them into the labels dataset",
            ", ".join(contrasts), ", ".join(unseen), ", ".join(sorted(trained)),
        )  # fmt: skip


@functools.cache
def _mask_coverage(image_path: Path, mask_path: Path):
    """The :class:`~lumbo_bids.label_coverage.LabelCoverage` of a mask, or None when a file cannot
    be read or the grids differ. Cached: the group level's checks and its run both select images."""
    from ..label_coverage import label_coverage
    from ..utils.images import ImageError, interpret_mask, read_volume

    try:
        image, affine, _ = read_volume(image_path)
        cord, _ = interpret_mask(read_volume(mask_path)[0], str(mask_path))
    except ImageError:
        return None
    return label_coverage(cord, affine, image) if cord.shape == image.shape else None


def _complete_masks(anats: list) -> tuple[list, list]:
    """``(images whose manual masks label the cord where the image shows it, [(image, coverage)]
    of those with a partial mask)`` (:mod:`lumbo_bids.label_coverage`). A file that cannot be
    read is kept: preprocessing then names it."""
    complete, partial = [], []
    for anat in anats:
        coverage = _mask_coverage(Path(anat.path), Path(anat.mask))
        if coverage is not None and coverage.partial:
            partial.append((anat, coverage))
        else:
            complete.append(anat)
    return complete, partial


def _rated_images(config, inputs: dict) -> tuple[list, list, set[str], list]:
    """``(images to train on, images left out as rated fail, names rated fail, [(image, coverage)]
    left out for a partial mask)``, as :func:`select_images` says."""
    from ..ratings import exclude_failed, read_ratings

    anats, partial = _complete_masks(masked_images(inputs) + accepted_masks(config, inputs))
    if config.qc_ratings is None:
        return anats, [], set(), partial
    ratings = read_ratings(config.qc_ratings)
    anats, excluded = exclude_failed(anats, ratings)
    if not anats:
        raise MissingInputError(f"--qc-ratings {config.qc_ratings}: every image with a manual mask is rated fail")
    return anats, excluded, {image for image, (rating, _) in ratings.items() if rating == "fail"}, partial


def write_study_round(config, inputs: dict, anats: list) -> None:
    """``group/rounds.tsv`` and this round's automatic masks (:mod:`lumbo_bids.reports.rounds`):
    per image its rating, its label's source, and how much its mask changed since the last round."""
    from ..ratings import read_ratings
    from ..reports.rounds import write_round

    ratings = {k: r for k, (r, _) in read_ratings(config.qc_ratings).items()} if config.qc_ratings else {}
    labels = {a.stem: label_source(a, config.output_dir) for a in anats}
    write_round(config.output_dir, [a for items in inputs.values() for a in items], ratings, labels)


def accepted_masks(config, inputs: dict) -> list:
    """The images without a manual mask whose automatic mask is rated pass (``AnatInput``s with
    that mask), unless ``--no-accepted-masks`` (:mod:`lumbo_bids.accepted`)."""
    from ..accepted import accepted_images

    if not config.accepted_masks:
        return []
    return accepted_images(config.output_dir, config.qc_ratings, [a for items in inputs.values() for a in items])


def write_annotation_outputs(config, inputs: dict, rated_fail: set[str]) -> None:
    """``group/annotate_next.tsv`` (the images without a mask, best to annotate first), the
    study page again, so that it links them, and ``group/to_correct/`` (the automatic masks of
    the images rated fail and of the first ones to annotate, ready to edit)."""
    from ..reports.annotate import write_annotate_next
    from ..reports.study import write_study_page
    from ..reports.to_correct import write_to_correct

    anats = [anat for items in inputs.values() for anat in items]
    path = write_annotate_next(config.output_dir, anats, config.bids_dir, rated_fail)
    if path is not None:
        LOGGER.info("group: wrote %s and %s", path, write_study_page(config.output_dir))
    write_to_correct(config.output_dir, anats, rated_fail)  # the automatic masks to correct, not draw


def preprocess(config, anats: list, resolution: float, crop_size: tuple) -> list:
    """The participant level's preprocessing of every masked image (Nipype, cached): ``RawCase``s."""
    from ..model.finetune import RawCase
    from ..workflows.group import init_group_preproc_wf, preproc_outputs
    from .participant import configure_nipype, run_workflow

    configure_nipype(config)
    workflow = init_group_preproc_wf(config, anats, resolution, crop_size)
    try:
        exec_graph = run_workflow(workflow, config, preproc_progress(anats))
    except RuntimeError:
        raise LumboError(
            f"preprocessing failed for some images; crash files in {config.output_dir / 'group' / 'log' / config.run_uuid}",
            ExitCode.FAILURE,
        ) from None
    outputs = preproc_outputs(exec_graph, anats)
    return [
        RawCase(a.subject, a.stem, a.contrast, Path(outputs[a.path].out_stack), Path(outputs[a.path].mask_stack)) for a in anats
    ]


def preproc_progress(anats: list):
    """One line when each image starts and when it is preprocessed."""
    from ..workflows.base import anat_wf_name
    from .progress import ImageProgress

    return ImageProgress({anat_wf_name(a): a.label for a in anats}, lambda key: "preprocessed")


def masked_images(inputs: dict) -> list:
    return [anat for items in inputs.values() for anat in items if anat.mask is not None]


def check_group_inputs(config, inputs: dict) -> None:
    """Fine-tuning needs images with masks, all present on disk (exit 66 otherwise), ratings
    that name images (:func:`check_ratings`), and options and subjects that allow a split or a
    search (:func:`plan_training`): all checked before anything is written."""
    from ..utils.bids import missing_content_message, unavailable_files

    anats = masked_images(inputs)
    if not anats and not accepted_masks(config, inputs):
        raise LumboError(
            f"no selected image has a manual mask under {config.labels_dir} (expected sub-XX/anat/<source>_label-SC_seg.nii.gz)"
            + ("" if config.qc_ratings is None else f", nor an automatic mask rated pass in {config.qc_ratings}"),
            ExitCode.NO_INPUT,
        )
    absent = [path for anat in anats for path in unavailable_files(anat)]
    if absent:
        more = f" (and {len(absent) - 1} more file(s))" if len(absent) > 1 else ""
        raise LumboError(missing_content_message(absent[0]) + more, ExitCode.NO_INPUT)
    check_ratings(config)
    plan_training(config, _rated_images(config, inputs)[0])


def check_ratings(config) -> None:
    """Every row of ``--qc-ratings`` must name an image of BIDS_DIR (any image, selected or not):
    one warning for each row that names none (a typo, a wrong case), and a usage error (64)
    when such a row is rated ``fail``: the image meant to be left out would be trained on."""
    from ..ratings import unmatched_rows

    if config.qc_ratings is None:
        return
    path = config.qc_ratings
    failed = []
    for row, image, rating, close in unmatched_rows(path, dataset_image_names(config.bids_dir)):
        hint = f" (did you mean {close}?)" if close else ""
        if rating == "fail":
            failed.append((row, image, hint))
        else:
            LOGGER.warning(
                "--qc-ratings %s, row %d: %s matches no image in %s%s; row ignored", path, row, image, config.bids_dir, hint
            )
    if failed:
        row, image, hint = failed[0]
        more = f" (also rows {', '.join(str(r) for r, _, _ in failed[1:])}, rated fail)" if failed[1:] else ""
        raise UsageError(
            f"--qc-ratings {path}, row {row}: {image} is rated fail but matches no image in {config.bids_dir}{hint}{more}; "
            "correct the image name (the file name without .nii.gz), or the image would be trained on",
        )


def dataset_image_names(bids_dir: Path) -> set[str]:
    """The names (without ``.nii(.gz)``) of every anatomical image in the BIDS dataset."""
    paths = [*Path(bids_dir).glob("sub-*/anat/*.nii*"), *Path(bids_dir).glob("sub-*/ses-*/anat/*.nii*")]
    return {path.name.split(".nii")[0] for path in paths}


def fine_tune_and_report(config, init, train_raw, val_raw, resolution, crop_size, split=None) -> ExitCode:
    """Fine-tune the segmentation network (and, unless ``--no-localiser-finetune``, the localiser on
    ``split``: the training and validation images, ``AnatInput``s); write ``group/model`` (the
    localiser nested in it), the model card, ``validation_dice.tsv`` and the training curves."""
    from ..derivatives import atomic_write_json
    from .localiser import save_models, select_localiser, tune_localiser

    group_dir = config.output_dir / "group"
    cfg = train_config(config, init)
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
        "preprocessing": {
            **init.manifest["preprocessing"],
            "intensity": tuned.intensity,
            "resolution_mm": resolution,
            "crop_size": list(crop_size),
        },
        "training": card,
    }
    artifact_path = save_models(tuned.result.model, manifest, localiser, group_dir / "model")
    atomic_write_json(group_dir / "model_card.json", manifest["training"])
    write_validation_table(group_dir / "validation_dice.tsv", val_raw, before, tuned.validation_dice, tried)
    write_training_curves(group_dir, before, tuned)
    LOGGER.info("fine-tuned model: %s (use: participant --model %s)", artifact_path, artifact_path)
    return ExitCode.OK


def train_config(config, init):
    """The segmentation fine-tuning settings of this run (command line, config file, the model's patch size)."""
    from ..model.training import TrainConfig

    return TrainConfig(
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        loss=config.loss,
        freeze=config.freeze or ("encoder" if config.freeze_encoder else "none"),
        early_stopping_patience=config.patience,
        seed=config.random_seed,
        augmentation_strength=config.augmentation,
        patch_size=tuple(config.patch_size or init.manifest["preprocessing"]["patch_size"]),
    )


def tune_segmentation(config, init, train_raw, val_raw, cfg, state_dir: Path, key: str, resume=None, before=None):
    """Score ``init`` on ``val_raw`` (unless ``before`` has its scores), fine-tune it (one line per
    epoch) and score it again: ``(FineTuned, Dice before)``. ``key`` names the run's data folder
    in the work dir; ``resume`` defaults to ``--resume``."""
    from ..model.architectures import ARCHITECTURES
    from ..model.finetune import evaluate_cases, fine_tune
    from .progress import epoch_progress, training_outcome

    inference = replace(init.plan, patch_size=cfg.patch_size)
    if before is None:
        before = evaluate_cases(init.build_model(), val_raw, inference)
        LOGGER.info("validation Dice before fine-tuning: %s", _fmt(before))

    def model_fn():
        if config.from_scratch:  # the initial model's architecture (a network or an ensemble), new weights
            return ARCHITECTURES[init.architecture](dict(init.architecture_config))
        return init.build_model()

    plan = None if config.from_scratch else init.manifest["preprocessing"].get("intensity")
    data_dir = config.work_dir / "group_data" / config.run_uuid / key
    tuned = fine_tune(
        model_fn, train_raw, val_raw, cfg, data_dir, state_dir, intensity_plan=plan, inference=inference,
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
    from ..model.finetune import model_card
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
    from ..model.history import with_image_dice
    from ..model.training_curves import plot_history

    metrics_tsv = group_dir / "training" / "metrics.tsv"
    if metrics_tsv.exists():
        start, kept = (float(np.mean(list(scores.values()))) for scores in (before, tuned.validation_dice))
        table = with_image_dice(metrics_tsv, start, kept, tuned.result.best_epoch)
        plot_history(atomic_write_text(group_dir / "metrics.tsv", table), group_dir / "training_curves.png")


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


def _mm(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in scores.items()) + f" (mean {np.mean(list(scores.values())):.3f})"
