"""Which images the group level trains on, checked before anything is written: masked images,
accepted automatic masks rated pass, ratings, partial masks, and the subject split."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from ..accepted import ACCEPTED, label_source
from ..errors import ExitCode, LumboError, MissingInputError, UsageError, named

LOGGER = logging.getLogger("lumbo_bids.group")


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


def accepted_masks(config, inputs: dict) -> list:
    """The images without a manual mask whose automatic mask is rated pass (``AnatInput``s with
    that mask), unless ``--no-accepted-masks`` (:mod:`lumbo_bids.accepted`)."""
    from ..accepted import accepted_images

    if not config.accepted_masks:
        return []
    return accepted_images(config.output_dir, config.qc_ratings, [a for items in inputs.values() for a in items])


def masked_images(inputs: dict) -> list:
    return [anat for items in inputs.values() for anat in items if anat.mask is not None]


def check_group_inputs(config, inputs: dict) -> None:
    """Fine-tuning needs images with masks, all present on disk (exit 66 otherwise), ratings
    that name images (:func:`check_ratings`), and options and subjects that allow a split or a
    search (:func:`split_for_training`): all checked before anything is written."""
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
    split_for_training(config, _rated_images(config, inputs)[0])


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


def split_for_training(config, anats: list):
    """``(search spec, None, None)`` with ``--search``, else ``(None, training subjects,
    validation subjects)``; a one-line error when the options or the subjects do not allow it
    (``--search`` with ``--learning-curve``, a bad spec, too few subjects, an unknown
    ``--validation-subjects``)."""
    from ..training.finetune import split_subjects

    if config.search is not None and config.learning_curve:
        raise LumboError("--search and --learning-curve are separate runs: give one of them", ExitCode.USAGE)
    subjects = [a.subject for a in anats]
    if config.search is not None:
        from ..training.search import load_search_spec, subject_folds

        with named("--search"):
            search_spec = load_search_spec(config.search)
        subject_folds(subjects, search_spec.folds, search_spec.seed)  # enough subjects?
        return search_spec, None, None
    train, val = split_subjects(subjects, config.validation_fraction, config.validation_subjects, config.random_seed)
    return None, train, val
