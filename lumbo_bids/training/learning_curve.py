"""Learning curve of fine-tuning: held-out Dice against the number of annotated subjects.

:func:`curve_subsets` draws the training subsets (1, 2, 4, ... subjects, nested: each is the
start of one seeded permutation, so a larger point only adds subjects); :func:`run_learning_curve`
fine-tunes once per subset through a callable and scores the same validation images every time;
:func:`curve_table` and :func:`plot_learning_curve` give ``learning_curve.tsv`` and ``.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("lumbo_bids.group")


def curve_sizes(n_subjects: int) -> list[int]:
    """1, 2, 4, ... below ``n_subjects``, then ``n_subjects`` itself."""
    if n_subjects < 1:
        raise ValueError(f"a learning curve needs at least 1 training subject, got {n_subjects}")
    sizes, k = [], 1
    while k < n_subjects:
        sizes.append(k)
        k *= 2
    return [*sizes, n_subjects]


def curve_subsets(subjects: list[str], seed: int = 42) -> list[list[str]]:
    """Nested training subsets of :func:`curve_sizes`' sizes, drawn with ``seed`` (sorted lists)."""
    order = np.random.default_rng(seed).permutation(sorted(set(subjects))).tolist()
    return [sorted(order[:k]) for k in curve_sizes(len(order))]


@dataclass(frozen=True)
class CurvePoint:
    """One point: the training subjects (none: the starting model) and the Dice of each validation image."""

    subjects: tuple[str, ...]
    dice: dict[str, float]

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values())))


def run_learning_curve(
    base_dice: dict[str, float], subjects: list[str], fine_tune: Callable[[list[str]], dict[str, float]], seed: int = 42
) -> list[CurvePoint]:
    """The starting model's point (n = 0) and one fine-tuning per subset of ``subjects``.

    ``fine_tune(train_subjects) -> {validation image: Dice}`` must score the same validation
    images every time (a subject-wise split made before)."""
    points = [CurvePoint((), dict(base_dice))]
    LOGGER.info("learning curve: n=0 (starting model): mean validation Dice %.3f", points[0].mean_dice)
    subsets = curve_subsets(subjects, seed)
    for k, subset in enumerate(subsets, 1):
        LOGGER.info("learning curve: point %d/%d, fine-tuning on %d subject(s): %s", k, len(subsets), len(subset), subset)
        dice = fine_tune(subset)
        if set(dice) != set(base_dice):
            raise ValueError(f"the validation images changed between points: {sorted(dice)} vs {sorted(base_dice)}")
        points.append(CurvePoint(tuple(subset), dice))
        LOGGER.info("learning curve: n=%d: mean validation Dice %.3f", len(subset), points[-1].mean_dice)
    return points


def curve_table(points: list[CurvePoint]) -> str:
    """``learning_curve.tsv``: n_subjects, subjects, mean_dice, then one column per validation image."""
    images = sorted(points[0].dice)
    rows = ["\t".join(["n_subjects", "subjects", "mean_dice", *(f"dice_{name}" for name in images)])]
    for p in points:
        rows.append(
            "\t".join(
                [str(p.n_subjects), ",".join(p.subjects) or "n/a", f"{p.mean_dice:.4f}", *(f"{p.dice[i]:.4f}" for i in images)]
            )
        )
    return "\n".join(rows) + "\n"


def plot_learning_curve(points: list[CurvePoint], png_path: Path) -> Path:
    """Mean (line) and per-image (dots) validation Dice against the number of training subjects."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    n = [p.n_subjects for p in points]
    for name in sorted(points[0].dice):
        ax.plot(n, [p.dice[name] for p in points], "o", alpha=0.5, markersize=4, label=name)
    ax.plot(n, [p.mean_dice for p in points], "-D", color="black", label="mean")
    ax.set_xticks(n)
    ax.set_xlabel("annotated training subjects (0: the starting model)")
    ax.set_ylabel("held-out validation Dice")
    ax.set_title("How many subjects must be annotated?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, format="png")
    return png_path
