#!/usr/bin/env python3
"""Dice of segmentation models on every masked real image, as acquired and as thicker acquisitions.

Each image of the dataset with a manual mask goes through the participant level's preprocessing
(:func:`train_base_model.prepare_case`: RPI, 0.5 mm, crop around the mask's centerline); each
model segments it as the participant level does (:meth:`lumbo_bids.model.predictor.Predictor.segment`:
its own intensity plan, prediction, post-processing) and is scored against the manual mask on
that grid. Beside the image as acquired, two degraded versions ask what the held-out
thick-slice sets ask (the truth stays the 0.5 mm manual mask):

``slices3mm``
    3 mm slices: a box slice profile (the mean of 6 slices at 0.5 mm), sampled every 3 mm, then
    linear interpolation back to 0.5 mm, as the participant level resamples a 3 mm image. The
    training randomisation (:func:`lumbo_bids.training.acquisition.simulate_resolution`) uses a Gaussian
    profile, so this is not the training simulator.
``slices3mm_1mm_snr8``
    The same with 1 mm in-plane voxels and Rician noise at 8 times the cord's mean intensity
    (seeded, the same noise for every model).
``sagittal3mm``
    3 mm sagittal slices (thick left-right, box profile), as lumbar T2w TSE is acquired in the clinic.
``coronal3mm``
    3 mm coronal slices (thick anterior-posterior, box profile): the hardest thick slices, as the
    cord is only 7-9 mm deep (the shipped network's figures are in its model card and the README;
    no held-out set is coronal).

Usage::

    .venv/bin/python scripts/evaluate_base_models.py lumbo_bids/data/models/cord_seg work/arch/*/models/cord_seg \\
        --out work/arch/evaluation.tsv

``--ensemble`` adds a column: the mean of the given models' probabilities, thresholded and
post-processed as the first model's plan says (e.g. two seeds of one recipe).
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

LOGGER = logging.getLogger("lumbo_bids.evaluate")


def box_resolution(image: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """``image`` acquired with voxels ``factors`` times larger (box profile: each thick voxel is
    the mean of ``f`` thin ones), then linearly interpolated back onto its grid (as
    :func:`lumbo_bids.training.acquisition.simulate_resolution` does after its Gaussian profile)."""
    from lumbo_bids.training.acquisition import interpolate_samples

    out = image.astype(np.float32, copy=True)
    for axis, f in enumerate(factors):
        n = out.shape[axis]
        blocks = n // f
        if f <= 1 or blocks < 2:
            continue
        moved = np.moveaxis(out, axis, -1)
        samples = moved[..., : blocks * f].reshape(*moved.shape[:-1], blocks, f).mean(axis=-1)
        centres = np.arange(blocks) * f + (f - 1) / 2  # where each thick voxel sits on the thin grid
        out = np.moveaxis(interpolate_samples(samples, centres, n, axis=-1), -1, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def rician(image: np.ndarray, mask: np.ndarray, snr: float, seed: int) -> np.ndarray:
    """``image`` with Rician noise whose sigma is the mean intensity in ``mask`` over ``snr``."""
    rng = np.random.default_rng(seed)
    sigma = float(image[mask > 0].mean()) / snr
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imag).astype(np.float32)


CONDITIONS = {
    "as_acquired": lambda image, mask: image,
    "slices3mm": lambda image, mask: box_resolution(image, (1, 1, 6)),
    "slices3mm_1mm_snr8": lambda image, mask: rician(box_resolution(image, (2, 2, 6)), mask, 8.0, seed=0),
    "sagittal3mm": lambda image, mask: box_resolution(image, (6, 1, 1)),
    "coronal3mm": lambda image, mask: box_resolution(image, (1, 6, 1)),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model artifact folders (cord_seg)")
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "evaluate")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="TSV: model, image, condition, dice, volume_ratio (predicted / manual), end_gap_mm",
    )
    parser.add_argument("--conditions", nargs="*", choices=sorted(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also score the mean of the models' probabilities (the first model's threshold and post-processing)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from train_base_model import masked_images, prepare_case

    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.predictor import Predictor

    args.work.mkdir(parents=True, exist_ok=True)
    cases = [prepare_case(anat, args.work)[0] for anat in masked_images(args.bids)]
    stacks = {}
    for case in cases:
        image, mask = np.load(case.image), np.load(case.mask) > 0
        for condition in args.conditions:
            degrade = CONDITIONS[condition]
            stacks[case.name, condition] = (degrade(image, mask), mask)
    rows, probabilities, first = [], {}, None
    for path in args.models:
        predictor = Predictor.from_artifact(load_artifact(path))
        first = predictor if first is None else first
        for (name, condition), (image, mask) in stacks.items():
            probability = predictor.probability(predictor.standardise(image))  # Predictor.segment, keeping the probability
            if args.ensemble:
                probabilities.setdefault((name, condition), []).append(probability)
            rows.append(score(str(path), name, condition, predictor.mask(probability), mask, predictor.plan.resolution))
    if args.ensemble:
        label = "mean of " + " + ".join(str(path) for path in args.models)
        for (name, condition), members in probabilities.items():
            predicted = first.mask(np.mean(members, axis=0))
            rows.append(score(label, name, condition, predicted, stacks[name, condition][1], first.plan.resolution))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    print(markdown_table(rows, args.conditions))
    print()
    print(per_image_table(rows, args.conditions))
    return 0


def score(model: str, name: str, condition: str, predicted: np.ndarray, mask: np.ndarray, resolution: float) -> dict:
    """One TSV row: the Dice of ``predicted`` against ``mask``, their volume ratio, and how far above
    the manual mask's lowest slice the predicted one is (``end_gap_mm``, + above: a conus cut short;
    empty for an empty prediction). Axis 2 runs inferior to superior."""
    from lumbo_bids.metrics import dice

    value, ratio = float(dice(predicted, mask)), float(predicted.sum() / mask.sum())
    lowest = [np.flatnonzero(np.asarray(m).any(axis=(0, 1))) for m in (predicted, mask)]
    gap = f"{(lowest[0][0] - lowest[1][0]) * resolution:.1f}" if lowest[0].size else ""
    LOGGER.info("%s %s %s: Dice %.3f, volume %.2f x manual, end %s mm", model, name, condition, value, ratio, gap)
    return {
        "model": model, "image": name, "condition": condition, "dice": f"{value:.4f}", "volume_ratio": f"{ratio:.4f}",
        "end_gap_mm": gap,
    }  # fmt: skip


def markdown_table(rows: list[dict], conditions=tuple(CONDITIONS)) -> str:
    """One row per image as acquired (or in the first condition, when it was not asked for), then
    worst / mean per condition, then the range of the predicted / manual volume ratio over all
    images and conditions; one column per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    images = list(dict.fromkeys(r["image"] for r in rows))
    dice_of = {(r["model"], r["image"], r["condition"]): float(r["dice"]) for r in rows}
    first = "as_acquired" if "as_acquired" in conditions else conditions[0]
    lines = [f"| image ({first}) | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for image in images:
        lines.append(f"| {image} | " + " | ".join(f"{dice_of[m, image, first]:.3f}" for m in models) + " |")
    for condition in conditions:
        cells = []
        for m in models:
            values = [dice_of[m, image, condition] for image in images]
            cells.append(f"{min(values):.3f} / {np.mean(values):.3f}")
        lines.append(f"| worst / mean, {condition} | " + " | ".join(cells) + " |")
    if all("volume_ratio" in r for r in rows):
        cells = []
        for m in models:
            ratios = [float(r["volume_ratio"]) for r in rows if r["model"] == m]
            cells.append(f"{min(ratios):.2f} / {np.median(ratios):.2f} / {max(ratios):.2f}")
        lines.append("| volume / manual, min / median / max | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_image_table(rows: list[dict], conditions=tuple(CONDITIONS)) -> str:
    """One row per image and model: the Dice and volume ratio (predicted / manual) per condition, and
    the end gap where the predicted lowest slice is 1 mm or more off the manual one."""
    cell = {(r["model"], r["image"], r["condition"]): r for r in rows}
    lines = ["| image | model | " + " | ".join(conditions) + " |", "| --- | --- |" + " --- |" * len(conditions)]
    for image in dict.fromkeys(r["image"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            values = [cell.get((model, image, c)) for c in conditions]
            text = [_cell(v) if v else "" for v in values]
            lines.append(f"| {image} | {model} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def _cell(row: dict) -> str:
    gap = row.get("end_gap_mm", "")
    end = f", end {float(gap):+.1f} mm" if gap and abs(float(gap)) >= 1 else ""
    return f"{float(row['dice']):.3f} ({float(row['volume_ratio']):.2f}{end})"


if __name__ == "__main__":
    sys.exit(main())
