"""The group level's study outputs: ``group/annotate_next.tsv``, ``group/to_correct/``, the
round table (``group/rounds.tsv``) and the study page again."""

from __future__ import annotations

import logging

from ..accepted import label_source

LOGGER = logging.getLogger("lumbo_bids.group")


def write_study_round(config, inputs: dict, anats: list) -> None:
    """``group/rounds.tsv`` and this round's automatic masks (:mod:`lumbo_bids.reports.rounds`):
    per image its rating, its label's source, and how much its mask changed since the last round."""
    from ..ratings import read_ratings
    from ..reports.rounds import write_round

    ratings = {k: r for k, (r, _) in read_ratings(config.qc_ratings).items()} if config.qc_ratings else {}
    labels = {a.stem: label_source(a, config.output_dir) for a in anats}
    write_round(config.output_dir, [a for items in inputs.values() for a in items], ratings, labels)


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
