#!/usr/bin/env python3
"""Do the QC failure flags separate good masks from bad ones? (lumbo_bids.qc)

Segments every image of a BIDS dataset with the shipped models exactly as the participant level
does (Preprocessor: centerline from the manual mask where there is one, else from the
localiser; Predictor: standardise, probability, post-processing), computes the flags of each
real output, then of deliberately corrupted copies (slices removed, mask shifted off the cord,
eroded to half its volume, dilated to twice, top half cut, a blob far away, a noisy
probability) and prints the table image x corruption -> flags raised, and the measures of the
real outputs (what the thresholds are calibrated on). Exit status 1 when a real output raises
a flag or a corruption raises none.

``--manual`` takes the manual masks as the segmentation (and as a sure probability) instead:
masks known to be good, no network.

Usage: nice -n 19 .venv/bin/python scripts/validate_flags.py [--bids DIR] [--cache DIR] [--automatic | --manual]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# -- corruptions of (probability, mask) on the crop grid; resolution in mm ----------------------
def _extent(mask: np.ndarray) -> tuple[int, int]:
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    return int(z[0]), int(z[-1])


def remove_slices(prob, mask, resolution):
    """Empty a band of a quarter of the cord's length (at least 4 mm) in its middle."""
    lo, hi = _extent(mask)
    width = max(round(4.0 / resolution), (hi - lo + 1) // 4)
    start = (lo + hi - width) // 2
    out = mask.copy()
    out[:, :, start : start + width] = 0
    return prob, out


def shift_off_cord(prob, mask, resolution):
    """Move the mask 8 mm to the side (off the cord)."""
    return prob, np.roll(mask, round(8.0 / resolution), axis=0)


def erode_half(prob, mask, resolution):
    """Erode in-plane until at most half the volume is left."""
    out, target = mask.astype(bool), mask.sum() / 2
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    while out.sum() > target and out.any():
        out = ndimage.binary_erosion(out, structure)
    return prob, out.astype(np.uint8)


def dilate_double(prob, mask, resolution):
    """Dilate in-plane until the volume has at least doubled."""
    out, target = mask.astype(bool), 2 * mask.sum()
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    while out.sum() < target:
        out = ndimage.binary_dilation(out, structure)
    return prob, out.astype(np.uint8)


def cut_top_half(prob, mask, resolution):
    """Remove the upper half of the cord's length."""
    lo, hi = _extent(mask)
    out = mask.copy()
    out[:, :, (lo + hi + 1) // 2 :] = 0
    return prob, out


def blob_far_away(prob, mask, resolution):
    """Add a 3 mm-radius ball 12 mm beside the centerline, halfway up the cord."""
    lo, hi = _extent(mask)
    sx, sy, _ = mask.shape
    centre = np.array([sx // 2 + round(12.0 / resolution), sy // 2, (lo + hi) // 2])
    grid = np.indices(mask.shape).transpose(1, 2, 3, 0)
    ball = np.linalg.norm((grid - centre) * resolution, axis=-1) <= 3.0
    return prob, (mask.astype(bool) | ball).astype(np.uint8)


def noisy_probability(prob, mask, resolution):
    """Replace the probability by a half-sure one: the average of it and uniform noise."""
    noise = np.random.default_rng(0).uniform(size=prob.shape)
    return 0.5 * prob + 0.5 * noise, mask


CORRUPTIONS = {
    "remove_slices": remove_slices,
    "shift": shift_off_cord,
    "erode_half": erode_half,
    "dilate_x2": dilate_double,
    "cut_top_half": cut_top_half,
    "blob_far": blob_far_away,
    "noisy_prob": noisy_probability,
}


# -- the real outputs ------------------------------------------------------------------------------
def automatic_case(preprocessor, data, affine, mask=None):
    """As :meth:`Preprocessor.run_case` with the localiser's centerline, keeping its heat-map
    (what the QC node gets from the workflow), cropped like the image."""
    from lumbo_bids.centerline import centerline_from_heatmap
    from lumbo_bids.geometry import PreprocGeometry, crop_around_centerline, crop_box_from_centerline
    from lumbo_bids.model.localise import localise_heatmap

    image, _, geometry = preprocessor.resample(data, affine, mask)
    grid = geometry.resampled
    heat = localise_heatmap(preprocessor.localiser, image, grid.affine)
    box = crop_box_from_centerline(centerline_from_heatmap(heat, zooms=grid.zooms), grid, preprocessor.crop_size)
    geometry = PreprocGeometry(geometry.native, geometry.rpi, grid, box)
    return crop_around_centerline(image, box).astype(np.float32), crop_around_centerline(heat, box), geometry


def segment_dataset(bids: Path, automatic: bool = False) -> dict[str, dict]:
    """Per image: the arrays the QC node sees (probability, mask, image, crop centres,
    resolution, where the centerline was seen) and the manual mask's Dice where there is one."""
    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.predictor import Predictor
    from lumbo_bids.model.selection import SHIPPED_LOCALISER, SHIPPED_SEGMENTATION
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.qc import support_from_heatmap
    from lumbo_bids.utils.bids import find_manual_mask
    from lumbo_bids.utils.images import read_volume

    artifact = load_artifact(SHIPPED_SEGMENTATION)
    predictor = Predictor.from_artifact(artifact)
    preprocessor = Preprocessor.from_plan(artifact.plan, SHIPPED_LOCALISER)
    resolution = preprocessor.resolution
    cases = {}
    for image in sorted(bids.glob("sub-*/anat/*.nii.gz")):
        mask_path = find_manual_mask(image, bids, bids / "derivatives" / "labels")
        data, affine, _ = read_volume(image)
        manual = None if mask_path is None else read_volume(mask_path)[0]
        if manual is not None and not automatic:
            case = preprocessor.run_case(data, affine, manual)
            stack, geometry, support = case.stack, case.geometry, case.mask_stack.any(axis=(0, 1))
        else:
            try:
                stack, heat, geometry = automatic_case(preprocessor, data, affine, manual)
            except ValueError as error:  # the localiser saw no cord: nothing to flag, say so
                print(f"skipped {image.name}: {error}", file=sys.stderr)
                continue
            support = support_from_heatmap(heat, resolution)
        prob = predictor.probability(predictor.standardise(stack))
        mask = predictor.mask(prob)
        name = image.name.removesuffix(".nii.gz")
        cases[name] = {
            "prob": prob.astype(np.float32), "mask": mask, "image": stack, "support": support,
            "centers": np.asarray(geometry.crop.centers), "resolution": resolution,
            "centerline": "manual mask" if manual is not None and not automatic else "localiser",
            "dice": None if manual is None else _native_dice(mask, geometry, manual),
        }  # fmt: skip
        print(f"segmented {name} ({cases[name]['centerline']})", file=sys.stderr)
    return cases


def _native_dice(mask, geometry, manual) -> float:
    from lumbo_bids.geometry import to_native
    from lumbo_bids.metrics import dice

    return float(dice(to_native(mask, geometry, order=1, threshold=0.5) > 0, manual > 0.5))


def manual_cases(bids: Path, resolution: float = 0.5, crop_size=(64, 64)) -> dict[str, dict]:
    """The manual masks as the segmentation (and as a sure probability): masks known to be good."""
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.utils.bids import find_manual_mask
    from lumbo_bids.utils.images import read_volume

    preprocessor = Preprocessor(resolution, crop_size)
    cases = {}
    for image in sorted(bids.glob("sub-*/anat/*.nii.gz")):
        mask_path = find_manual_mask(image, bids, bids / "derivatives" / "labels")
        if mask_path is None:
            continue
        data, affine, _ = read_volume(image)
        case = preprocessor.run_case(data, affine, read_volume(mask_path)[0])
        cases[image.name.removesuffix(".nii.gz")] = {
            "prob": case.mask_stack.astype(np.float32), "mask": case.mask_stack, "image": case.stack,
            "centers": np.asarray(case.geometry.crop.centers), "support": case.mask_stack.any(axis=(0, 1)),
            "resolution": resolution, "centerline": "manual mask", "dice": 1.0,
        }  # fmt: skip
    return cases


def load_or_segment(bids: Path, cache: Path | None, automatic: bool) -> dict[str, dict]:
    if cache is not None and (cache / "cases.npz").is_file():
        stored = np.load(cache / "cases.npz", allow_pickle=True)
        return stored["cases"].item()
    cases = segment_dataset(bids, automatic)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / "cases.npz", cases=np.array(cases, dtype=object))
    return cases


def case_flags(case: dict, prob=None, mask=None) -> tuple[list[str], dict]:
    from lumbo_bids.qc import qc_measures, raised_flags

    prob = case["prob"] if prob is None else prob
    mask = case["mask"] if mask is None else mask
    manual = case["centerline"] == "manual mask"  # the support is the manual mask's slices
    measures = qc_measures(prob, mask, case["resolution"], case["centers"], case["image"], case["support"], manual)
    return raised_flags(measures), measures


def flag_table(cases: dict[str, dict]) -> tuple[list[list[str]], list[str], list[str]]:
    """Rows image x (uncorrupted, corruptions) -> flags raised; the uncorrupted segmentations
    that raise a flag and the corruptions that raise none (both empty: the flags separate them)."""
    rows, flagged, missed = [], [], []
    for name, case in cases.items():
        raised, _ = case_flags(case)
        if raised:
            flagged.append(f"{name} ({', '.join(raised)})")
        dice = "n/a" if case.get("dice") is None else f"{case['dice']:.3f}"
        row = [name, case["centerline"], dice, ", ".join(raised) or "none"]
        for corruption, corrupt in CORRUPTIONS.items():
            prob, mask = corrupt(case["prob"], case["mask"], case["resolution"])
            flags, _ = case_flags(case, prob, mask)
            if not flags:
                missed.append(f"{name} {corruption}")
            row.append(", ".join(flags) or "**none**")
        rows.append(row)
    return rows, flagged, missed


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv=None) -> int:
    from lumbo_bids.qc import FLAGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--cache", type=Path, help="keep the segmentations here (npz) and reuse them")
    parser.add_argument("--automatic", action="store_true", help="centerline from the localiser for every image")
    parser.add_argument("--manual", action="store_true", help="the manual masks as the segmentation (known good)")
    args = parser.parse_args(argv)
    cases = manual_cases(args.bids) if args.manual else load_or_segment(args.bids, args.cache, args.automatic)
    measures = sorted({flag.measure for flag in FLAGS})
    real = [[name, *(f"{case_flags(case)[1].get(m, float('nan')):.3g}" for m in measures)] for name, case in cases.items()]
    print("Measures of the uncorrupted segmentations\n")
    print(markdown(["image", *measures], real))
    rows, flagged, missed = flag_table(cases)
    print("\nFlags raised (uncorrupted, then each corruption)\n")
    print(markdown(["image", "centerline", "Dice", "uncorrupted", *CORRUPTIONS], rows))
    print(f"\nuncorrupted segmentations that raise a flag: {'; '.join(flagged) or 'none'}")
    print(f"corruptions that raise no flag: {'; '.join(missed) or 'none'}")
    return 0 if not (flagged or missed) else 1


if __name__ == "__main__":
    sys.exit(main())
