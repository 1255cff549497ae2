"""``group --learning-curve``: how many subjects must be annotated? The segmentation network is
fine-tuned on 1, 2, 4, ... of the training subjects (nested subsets drawn with the seed), each
run scored on the same validation images, the starting model being the point n = 0."""

from __future__ import annotations

import logging
from dataclasses import replace

from ..errors import ExitCode

LOGGER = logging.getLogger("lumbo_bids.group")


def learning_curve_and_report(config, init, train_raw: list, val_raw: list) -> ExitCode:
    """Run the curve (:func:`lumbo_bids.training.learning_curve.run_learning_curve`) with the group
    level's own fine-tuning; write ``group/learning_curve.tsv`` and ``group/learning_curve.png``."""
    from ..derivatives import atomic_write_text
    from ..training.finetune import evaluate_cases
    from ..training.learning_curve import curve_table, plot_learning_curve, run_learning_curve
    from .fine_tune import run_settings, train_config, tune_segmentation

    group_dir = config.output_dir / "group"
    cfg = train_config(init, **run_settings(config))
    base = evaluate_cases(init.build_model(), val_raw, replace(init.plan, patch_size=cfg.patch_size))

    def fine_tune(subjects: list[str]) -> dict[str, float]:
        subset = [c for c in train_raw if c.subject in subjects]
        key = f"curve_n{len(subjects)}"
        state = config.work_dir / "group_curve" / config.run_uuid / key
        return tune_segmentation(config, init, subset, val_raw, cfg, state, key, resume=False, before=base)[0].validation_dice

    points = run_learning_curve(base, sorted({c.subject for c in train_raw}), fine_tune, config.random_seed)
    table = atomic_write_text(group_dir / "learning_curve.tsv", curve_table(points))
    png = plot_learning_curve(points, group_dir / "learning_curve.png")
    summary = ", ".join(f"n={p.n_subjects}: {p.mean_dice:.3f}" for p in points)
    LOGGER.info("learning curve (mean validation Dice): %s; wrote %s and %s", summary, table, png)
    return ExitCode.OK
