"""Group level: fine-tune the segmentation model on every subject that has manual masks."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ExitCode, LumboError
from .fine_tune import fine_tune_and_report
from .inputs import select_images, split_for_training
from .search import run_search
from .study import write_annotation_outputs, write_study_round

LOGGER = logging.getLogger("lumbo_bids.group")


def run_group(config, inputs: dict) -> ExitCode:
    """Preprocess (cached), split by subject, fine-tune, evaluate, write the artifact and report."""
    from ..reports.group import write_group_summaries

    anats, rated_fail = select_images(config, inputs)
    search_spec, train_subjects, val_subjects = split_for_training(config, anats)  # checked before anything is written
    write_annotation_outputs(config, inputs, rated_fail)
    write_study_round(config, inputs, anats)
    for path in write_group_summaries(config.output_dir):  # participant-level results, if any (and to_correct)
        LOGGER.info("group: wrote %s", path)
    from ..model.artifact import load_artifact
    from ..model.selection import SHIPPED_SEGMENTATION

    init = load_artifact(config.init_model or SHIPPED_SEGMENTATION)
    plan = init.plan.with_overrides(config, only=("resolution", "crop_size"))
    if search_spec is None:
        LOGGER.info("group: %d image(s) with masks; train %s; validate %s", len(anats), train_subjects, val_subjects)

    raw = preprocess(config, anats, plan.resolution, plan.crop_size)
    if search_spec is not None:
        return run_search(config, search_spec, raw)
    train_raw = [c for c in raw if c.subject in train_subjects]
    val_raw = [c for c in raw if c.subject in val_subjects]
    if config.learning_curve:
        from .learning_curve import learning_curve_and_report

        return learning_curve_and_report(config, init, train_raw, val_raw)
    split = ([a for a in anats if a.subject in train_subjects], [a for a in anats if a.subject in val_subjects])
    return fine_tune_and_report(config, init, train_raw, val_raw, plan, split)


def preprocess(config, anats: list, resolution: float, crop_size: tuple) -> list:
    """The participant level's preprocessing of every masked image (Nipype, cached): ``RawCase``s."""
    from ..engine.runner import configure_nipype, run_workflow
    from ..training.finetune import RawCase
    from ..workflows.group import init_group_preproc_wf, preproc_outputs

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
    from ..engine.progress import ImageProgress
    from ..workflows.base import anat_wf_name

    return ImageProgress({anat_wf_name(a): a.label for a in anats}, lambda key: "preprocessed")
