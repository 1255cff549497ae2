"""``group/search/``: the parameter search's tables, best configuration and figure."""

from __future__ import annotations

import json
from pathlib import Path

from ..derivatives import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..training.search import DEFAULTS, SearchSpec, TrialResult
from .figures import figure_png


def write_search_outputs(results: list[TrialResult], out_dir: Path, spec: SearchSpec) -> dict[str, Path]:
    """``trials.tsv``, ``folds.json``, ``dice_vs_parameters.png`` and ``best_config.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(DEFAULTS)
    n_folds = spec.folds
    header = ["trial", *keys, *(f"dice_fold{f}" for f in range(n_folds)), "mean_dice", "seconds", "folds_run"]
    rows = ["\t".join(header)]
    for r in results:
        dice = [f"{d:.4f}" for d in r.fold_dice] + ["n/a"] * (n_folds - len(r.fold_dice))
        values = [json.dumps(r.params[k]) if isinstance(r.params[k], list) else str(r.params[k]) for k in keys]
        rows.append("\t".join([str(r.trial), *values, *dice, f"{r.mean_dice:.4f}", f"{r.seconds:.1f}", str(len(r.fold_dice))]))
    paths = {"trials": atomic_write_text(out_dir / "trials.tsv", "\n".join(rows) + "\n")}
    folds = results[0].folds if results else []
    paths["folds"] = atomic_write_json(out_dir / "folds.json", {"folds": folds, "seed": spec.seed})
    complete = [r for r in results if len(r.fold_dice) == n_folds] or results
    best = max(complete, key=lambda r: r.mean_dice)
    config = {
        "learning_rate": best.params["learning_rate"], "epochs": best.params["epochs"],
        "freeze": best.params["freeze"], "augmentation": best.params["augmentation"],
        "loss": best.params["loss"], "patch_size": best.params["patch_size"],
        "init_model": best.params["init_model"], "steps_per_epoch": spec.steps_per_epoch,
        "batch_size": spec.batch_size,
        "search": {"spec": spec.source, "trial": best.trial, "mean_dice": round(best.mean_dice, 4),
                   "fold_dice": [round(d, 4) for d in best.fold_dice]},
    }  # fmt: skip
    paths["best"] = atomic_write_json(out_dir / "best_config.json", config)
    paths["plot"] = _plot(results, out_dir / "dice_vs_parameters.png")
    return paths


def _plot(results: list[TrialResult], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varied = [k for k in DEFAULTS if len({json.dumps(r.params[k]) for r in results}) > 1] or ["learning_rate"]
    fig, axes = plt.subplots(1, len(varied), figsize=(4 * len(varied), 3.5), squeeze=False)
    for ax, key in zip(axes[0], varied):
        labels = [json.dumps(r.params[key]) for r in results]
        ax.scatter(labels, [r.mean_dice for r in results], color="tab:blue", zorder=3)
        for r, label in zip(results, labels):
            ax.scatter([label] * len(r.fold_dice), r.fold_dice, color="tab:gray", s=8, zorder=2)
        ax.set_xlabel(key)
        ax.set_ylabel("validation Dice (mean: blue, folds: grey)")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    return atomic_write_bytes(png, figure_png(fig))
