#!/usr/bin/env python3
"""Where segmentation models end the cord on conus phantoms whose tip is known.

Each phantom (:func:`lumbo_bids.training.conus_bench.bench_phantom`, seeds ``--first-seed`` on) is
rendered in each plain contrast (:func:`~lumbo_bids.training.conus_bench.render`), degraded as in
``scripts/evaluate_base_models.py`` (as acquired, 3 mm sagittal, ...), and segmented as the
participant level does (:meth:`lumbo_bids.model.predictor.Predictor`: the model's intensity plan,
prediction, post-processing). The table gives, per model, root layout, contrast and condition,
the median end gap (predicted lowest slice minus the tip, mm: + stops short, - marks roots or filum
below the tip), the share of phantoms that end within ``--within`` mm of the tip, the median Dice
of the last 30 mm above the tip and of the whole cord, and how often the cord-end QC flags
(``cord_end_uncertain``, ``cord_stops_short``; :mod:`lumbo_bids.qc`, without a manual mask) are
raised on ends more than ``--within`` mm off the tip and on the others.

Usage::

    .venv/bin/python scripts/evaluate_conus_phantoms.py lumbo_bids/data/models/cord_seg --out work/conus.tsv
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lumbo_bids  # noqa: E402, F401 (its TensorFlow defaults before TensorFlow loads)

# isort: split
from evaluate_base_models import CONDITIONS  # noqa: E402

from lumbo_bids.training import conus_bench, synth  # noqa: E402

LOGGER = logging.getLogger("lumbo_bids.evaluate_conus")
COLUMNS = (
    "model", "layout", "contrast", "condition", "seed", "end_gap_mm", "below_tip_mm3", "end_dice", "dice", "end_flags",
)  # fmt: skip
END_FLAGS = ("cord_end_uncertain", "cord_stops_short")


def end_flags(probability: np.ndarray, mask: np.ndarray, image: np.ndarray, resolution: float) -> list[str]:
    """The cord-end QC flags the participant level would raise on this output without a manual
    mask (the crop's centre is the canal's; every imaged slice may hold cord)."""
    from lumbo_bids.qc import qc_measures, raised_flags

    measures = qc_measures(probability, mask, resolution, image=image)
    return [flag for flag in raised_flags(measures) if flag in END_FLAGS]


def summary_table(rows: list[dict], within: float) -> str:
    """Markdown: one row per model, layout, contrast and condition (medians over the phantoms)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["layout"], row["contrast"], row["condition"]), []).append(row)
    lines = [
        f"| model | roots | contrast | condition | end gap, median (min / max), mm | within {within:g} mm "
        "| end Dice | Dice | end flagged: off / at the tip |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (model, layout, contrast, condition), members in groups.items():
        gaps = np.array([float(r["end_gap_mm"]) for r in members])
        near = np.isfinite(gaps) & (np.abs(gaps) <= within)
        finite = gaps[np.isfinite(gaps)]
        gap = f"{np.median(finite):+.1f} ({finite.min():+.1f} / {finite.max():+.1f})" if finite.size else "empty"
        end_dice = np.median([float(r["end_dice"]) for r in members])
        dice = np.median([float(r["dice"]) for r in members])
        flagged = np.array([bool(r["end_flags"]) for r in members])
        lines.append(
            f"| {model} | {layout} | {contrast} | {condition} | {gap} | {near.sum()}/{len(members)} "
            f"| {end_dice:.3f} | {dice:.3f} | {flagged[~near].sum()}/{(~near).sum()} / {flagged[near].sum()}/{near.sum()} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model artifact folders (cord_seg)")
    parser.add_argument("--phantoms", type=int, default=6, help="phantoms per root layout")
    parser.add_argument("--first-seed", type=int, default=10_000, help="seed of the first phantom (then +1, ...)")
    parser.add_argument("--layouts", nargs="*", choices=sorted(conus_bench.LAYOUTS), default=list(conus_bench.LAYOUTS))
    parser.add_argument("--contrasts", nargs="*", choices=sorted(conus_bench.CONTRASTS), default=list(conus_bench.CONTRASTS))
    parser.add_argument("--conditions", nargs="*", choices=sorted(CONDITIONS), default=["as_acquired", "sagittal3mm"])
    parser.add_argument("--within", type=float, default=5.0, help="an end this close to the tip (mm) counts as found")
    parser.add_argument("--out", type=Path, required=True, help="TSV: one row per model and phantom image")
    args = parser.parse_args(argv)
    if args.phantoms < 1:
        parser.error(f"--phantoms must be at least 1, got {args.phantoms}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.predictor import Predictor

    predictors = [(str(path), Predictor.from_artifact(load_artifact(path))) for path in args.models]
    resolution = predictors[0][1].plan.resolution
    rows = []
    for layout in args.layouts:
        for seed in range(args.first_seed, args.first_seed + args.phantoms):
            labels = conus_bench.bench_phantom(seed, layout, voxel_mm=resolution)
            cord = labels == synth.CORD
            for contrast in args.contrasts:
                clean = conus_bench.render(labels, contrast, seed)
                for condition in args.conditions:
                    image = CONDITIONS[condition](clean, cord)
                    for name, predictor in predictors:
                        probability = predictor.probability(predictor.standardise(image))
                        predicted = predictor.mask(probability)
                        scores = conus_bench.end_scores(predicted, cord, resolution)
                        flags = end_flags(probability, predicted, image, resolution)
                        LOGGER.info("%s %s %s %s seed %d: %s", name, layout, contrast, condition, seed, scores)
                        rows.append(
                            {"model": name, "layout": layout, "contrast": contrast, "condition": condition, "seed": seed}
                            | {k: f"{v:.4f}" for k, v in scores.items()}
                            | {"end_flags": " ".join(flags)}
                        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    print(summary_table(rows, args.within))
    return 0


if __name__ == "__main__":
    sys.exit(main())
