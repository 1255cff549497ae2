"""The training curves figure: loss and Dice per epoch of a ``metrics.tsv``, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .history import read_metrics


def plot_history(metrics_tsv: Path, png_path: Path) -> Path:
    """Draw the loss and Dice curves (training and validation) of a ``metrics.tsv`` as a PNG;
    a ``val_image_dice`` column (:func:`~lumbo_bids.training.history.with_image_dice`) is drawn as
    the before/after points.

    Parameters
    ----------
    metrics_tsv : Path
        File written by :func:`~lumbo_bids.training.trainer.train`.
    png_path : Path
        Output image (folders created).

    Returns
    -------
    Path
        ``png_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = read_metrics(Path(metrics_tsv))
    if not history.get("epoch"):
        raise ValueError(f"{metrics_tsv} has no epoch rows to plot")
    epochs = np.asarray(history["epoch"]) + 1  # the starting point (epoch -1) lands at 0
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "dice"), ("Loss", "Dice (threshold 0.5)")):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            if name in history:
                ax.plot(epochs, history[name], style, markersize=3, label=name)
        if key == "dice" and "val_image_dice" in history:
            image_dice = np.asarray(history["val_image_dice"])
            shown = np.isfinite(image_dice)
            label = "whole-image validation Dice (start, kept model)"
            ax.plot(epochs[shown], image_dice[shown], "D:", color="tab:red", markersize=6, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, format="png")
    return png_path
