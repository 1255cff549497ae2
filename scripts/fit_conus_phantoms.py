#!/usr/bin/env python3
"""A fitting test: can a segmentation network learn the conus phantoms' tip when trained on them alone?

A fresh network of the shipped architecture (or ``--base-filters`` / ``--depth``) is trained from
scratch on ``--phantoms`` conus phantoms (:func:`lumbo_bids.training.conus_bench.bench_phantom`,
seeds 30000 on: not the bench's) with the tip in view, on 48³ patches of which ``--tip-share``
lie around the tip, for ``--steps`` steps. The images are the bench's plain render (one intensity
per class, the roots as dark or bright as the cord: :func:`~lumbo_bids.training.conus_bench.render`)
or, with ``--synthetic``, a new random contrast per patch (:func:`lumbo_bids.training.synth.synthesise`,
the recipe's), and with ``--domain-randomisation`` the recipe's randomisation on top
(:func:`lumbo_bids.training.augment.augment_pair`). Then the network segments its own training
phantoms (does it fit?) and held-out bench phantoms (seeds 10000 on, the three root layouts, T2w-
and T1w-like) as the participant level does (:class:`lumbo_bids.model.predictor.Predictor`: the
shipped plan's intensity standardisation, sliding window and post-processing), and the end gap
(predicted lowest slice minus the tip, mm), the label's CSA at the predicted end, the Dice and the
highest probability within 3 mm above the tip are reported.

A network that cannot fit the tip here cannot learn it in the recipe either; one that fits it here
but not in the recipe points at what the recipe adds (contrasts, randomisation, label maps, the
starting weights).

Usage::

    .venv/bin/python scripts/fit_conus_phantoms.py --layout mixed --synthetic --out work/fit/synthetic.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lumbo_bids  # noqa: E402, F401 (its TensorFlow defaults before TensorFlow loads)

LOGGER = logging.getLogger("lumbo_bids.fit_conus")
LAYOUTS = ("none", "spread", "dorsal")
TIP_WINDOW_MM = 3.0
PATCH = 48


def phantom_case(seed: int, layout: str, contrast: str, standardise, shape=(64, 64, 300)) -> dict:
    """A bench phantom, its plain render standardised as the model's plan says, its cord and labels."""
    from lumbo_bids.training import conus_bench, synth

    labels = conus_bench.bench_phantom(seed, layout, shape=shape)
    image = standardise(conus_bench.render(labels, contrast, seed))
    return {"labels": labels, "cord": (labels == synth.CORD).astype(np.uint8), "image": image, "layout": layout}


def _patch_image(case: dict, window, rng: np.random.Generator, synthetic: bool, augment) -> tuple:
    from lumbo_bids.training.augment import augment_pair
    from lumbo_bids.training.streams import synthetic_patch

    if synthetic:  # the recipe's synthetic patch (a new contrast, standardised), seeded from rng
        image = synthetic_patch(case["labels"][window], int(rng.integers(0, 2**62)))  # float32
    else:
        image = case["image"][window]
    target = case["cord"][window]
    if augment is not None:
        image, target = augment_pair(image, target, rng, augment)
    return image, target


def training_batch(cases: list[dict], size: int, patch: int, tip_share: float, rng: np.random.Generator, **kw) -> tuple:
    """``size`` patches of ``patch``³ (image, target; channels last): a share ``tip_share`` holds a
    phantom's tip slice and a slice below it (centred less than half a patch from the tip), the
    others are centred anywhere along its cord."""
    images, targets = [], []
    for _ in range(size):
        case = cases[int(rng.integers(len(cases)))]
        z = np.flatnonzero(case["cord"].any(axis=(0, 1)))
        centre = (
            z[0] + int(rng.integers(1 - patch // 2, patch // 2))
            if rng.random() < tip_share
            else int(rng.integers(z[0], z[-1] + 1))
        )
        shape = case["cord"].shape
        z0 = int(np.clip(centre - patch // 2, 0, shape[2] - patch))
        x0, y0 = (int(rng.integers(0, n - patch + 1)) for n in shape[:2])
        window = np.s_[x0 : x0 + patch, y0 : y0 + patch, z0 : z0 + patch]
        image, target = _patch_image(case, window, rng, **kw)
        images.append(image)
        targets.append(target)
    return np.stack(images)[..., None].astype(np.float32), np.stack(targets)[..., None].astype(np.float32)


def end_row(predictor, case: dict) -> dict:
    """Where ``predictor`` ends the cord of ``case`` (:func:`lumbo_bids.training.conus_bench.end_scores`),
    the label's CSA at the predicted lowest slice and the highest probability near the tip."""
    from lumbo_bids.training import conus_bench

    resolution = predictor.plan.resolution
    probability = predictor.probability(case["image"])
    mask = predictor.mask(probability)
    scores = conus_bench.end_scores(mask, case["cord"], resolution)
    tip = int(np.flatnonzero(case["cord"].any(axis=(0, 1)))[0])
    gap = scores["end_gap_mm"]  # NaN: an empty prediction
    csa = float("nan") if np.isnan(gap) else float(case["cord"][..., tip + int(round(gap / resolution))].sum()) * resolution**2
    near = probability[..., tip : tip + int(round(TIP_WINDOW_MM / resolution))]
    return {
        "layout": case["layout"], "end_gap_mm": gap, "csa_at_end_mm2": csa, "dice": scores["dice"],
        "p_max_near_tip": float(near.max()),
    }  # fmt: skip


def summary(rows: list[dict], within: float = 5.0) -> dict:
    """Median end gap, ends within ``within`` mm, median CSA at the end, median Dice."""
    gaps = np.array([r["end_gap_mm"] for r in rows], dtype=float)
    return {
        "cases": len(rows), "end_gap_median_mm": float(np.nanmedian(gaps)),
        "within": int(np.sum(np.abs(gaps) <= within)),
        "csa_at_end_median_mm2": float(np.nanmedian([r["csa_at_end_mm2"] for r in rows])),
        "dice_median": float(np.median([r["dice"] for r in rows])),
        "p_max_near_tip_median": float(np.median([r["p_max_near_tip"] for r in rows])),
    }  # fmt: skip


def evaluate(predictor, sets: dict[str, list[dict]], step: int) -> dict:
    """Every case of every set segmented and scored (:func:`end_row`), with a summary per set."""
    result = {"step": step}
    for name, cases in sets.items():
        rows = [end_row(predictor, case) for case in cases]
        result[name] = {"summary": summary(rows), "rows": rows}
        LOGGER.info("step %d, %s phantoms: %s", step, name, result[name]["summary"])
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON: the arguments, the time, every case's row, summaries")
    parser.add_argument("--model", type=Path, default=REPO / "lumbo_bids" / "data" / "models" / "cord_seg",
                        help="artifact whose plan (intensity, window, post-processing) is used; its weights are not")  # fmt: skip
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--loss", choices=("dice", "dice_bce"), default="dice")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--phantoms", type=int, default=15)
    parser.add_argument("--layout", choices=(*LAYOUTS, "mixed"), default="mixed", help="mixed: the three in turn")
    parser.add_argument("--contrast", choices=("T2w", "T1w"), default="T2w", help="the plain render of the training phantoms")
    parser.add_argument("--synthetic", action="store_true", help="a random contrast per patch (synth.synthesise)")
    parser.add_argument("--domain-randomisation", type=float, default=0.0, help="the recipe's, on top (0: none)")
    parser.add_argument("--tip-share", type=float, default=0.5)
    parser.add_argument("--held-out", type=int, default=4, help="held-out phantoms per layout (each in T2w and T1w)")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 300), help="phantom grid (0.5 mm voxels)")
    parser.add_argument("--evaluate-every", type=int, default=0, help="also evaluate every N steps (0: at the end only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "phantoms", "held_out"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if min(args.shape) < PATCH:
        parser.error(f"--shape {' '.join(map(str, args.shape))}: every side must hold a {PATCH}-voxel patch")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import keras

    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.network import UNet3DConfig, build_unet3d
    from lumbo_bids.model.predictor import Predictor
    from lumbo_bids.training import losses
    from lumbo_bids.training.augment import AugmentConfig

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    plan = load_artifact(args.model).plan
    standardise = Predictor(None, plan).standardise
    layouts = LAYOUTS if args.layout == "mixed" else (args.layout,)
    shape = tuple(args.shape)
    train = [phantom_case(30000 + k, layouts[k % len(layouts)], args.contrast, standardise, shape) for k in range(args.phantoms)]
    augment = None
    if args.domain_randomisation > 0:
        augment = AugmentConfig.domain_randomised(1.0, args.domain_randomisation, "balanced")
    model = build_unet3d(UNet3DConfig(base_filters=args.base_filters, depth=args.depth))
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=losses.get_loss(args.loss))
    predictor = Predictor(model, plan)
    held = [phantom_case(10000 + k, layout, contrast, standardise, shape)
            for k in range(args.held_out) for layout in LAYOUTS for contrast in ("T2w", "T1w")]  # fmt: skip
    report = {"arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "evaluations": []}
    started, trained = time.time(), 0.0
    for step in range(1, args.steps + 1):
        x, y = training_batch(train, args.batch, PATCH, args.tip_share, rng, synthetic=args.synthetic, augment=augment)
        loss = model.train_on_batch(x, y)
        if step == 1 or step % max(1, args.steps // 10) == 0:
            LOGGER.info("step %d/%d: loss %.4f (%.0f s)", step, args.steps, float(np.ravel(loss)[0]), time.time() - started)
        if step == args.steps or (args.evaluate_every and step % args.evaluate_every == 0):
            trained = time.time() - started
            report["evaluations"].append(evaluate(predictor, {"training": train, "held_out": held}, step))
            started = time.time() - trained  # evaluation time is not training time
    report["seconds"] = trained  # the last evaluation is report["evaluations"][-1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
