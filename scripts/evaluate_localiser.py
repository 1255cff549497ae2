#!/usr/bin/env python3
"""Accuracy of the automatic centerline (a localiser) against the manual-mask centerline.

For every image of a BIDS dataset with a manual mask: the participant level's automatic path
(reorient, resample to 0.5 mm, localiser heat-map, centerline) versus the centerline of the
manual mask, on the slices that contain cord: median and maximum in-plane distance (mm), the
share of slices whose cord stays well inside the default 64x64 crop, and where the heat-map's
detections end (the lowest slice whose heat exceeds 0.5, mm above the bottom of the field of
view) against where the mask ends: a localiser that knows the conus stops where the cord does.
A localiser whose heat-map never exceeds 0.5 gets a row with its `failure` and no distances.

``--localiser`` and ``--bids`` take several values (``--names``, ``--conditions`` label them:
e.g. one dataset as acquired and its re-acquisitions by ``scripts/reacquire.py``); ``--subjects``
scores only those subjects (a leave-one-subject-out localiser on its held-out subject);
``--reference NAME=MASK`` gives an image without a manual mask a reference mask (for instance
a segmentation checked by eye) on any grid: it is resampled onto the image's grid, and the
row says ``reference`` instead of ``manual``. One TSV row per (localiser, condition, image).

Usage::

    .venv/bin/python scripts/evaluate_localiser.py [--bids DIR ...] [--localiser PATH ...] [--out TSV]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIELDS = (
    "localiser",
    "condition",
    "image",
    "truth",
    "median_mm",
    "max_mm",
    "in_crop_pct",
    "heat_end_mm",
    "mask_end_mm",
    "failure",
)


def score(preprocessor, data, affine, mask) -> dict:
    """The localiser's centerline and heat-map end against ``mask`` (both on the image's grid)."""
    from lumbo_bids.centerline import centerline_from_heatmap

    volume, cord, geometry = preprocessor.resample(data, affine, mask)  # the Reorient + Resample nodes
    grid = geometry.resampled
    truth = preprocessor.centerline(volume, grid, cord)
    heat = preprocessor.localise(volume, grid.affine)
    z = np.flatnonzero(cord.any(axis=(0, 1)))
    try:
        found = centerline_from_heatmap(heat, zooms=grid.zooms)  # what the participant level does
    except ValueError as exc:  # no detection at all: the participant level falls back; a failure here
        return {"median_mm": "", "max_mm": "", "in_crop_pct": 0.0, "heat_end_mm": "",
                "mask_end_mm": round(float(z.min() * grid.zooms[2]), 1), "failure": str(exc)}  # fmt: skip
    error = grid.zooms[0] * np.linalg.norm(found[z] - truth[z], axis=1)
    margin = preprocessor.crop_size[0] // 2 - int(round(5.0 / grid.zooms[0]))  # half the crop, minus a cord radius
    inside = np.mean(np.abs(found[z] - truth[z]).max(axis=1) < margin) * 100
    hot = np.flatnonzero(heat.max(axis=(0, 1)) > 0.5)
    return {
        "median_mm": round(float(np.median(error)), 2),
        "max_mm": round(float(error.max()), 2),
        "in_crop_pct": round(float(inside), 1),
        "heat_end_mm": round(float(hot.min() * grid.zooms[2]), 1) if hot.size else "",
        "mask_end_mm": round(float(z.min() * grid.zooms[2]), 1),
        "failure": "",
    }


def main(argv=None) -> int:
    from lumbo_bids.model.selection import SHIPPED_LOCALISER
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.utils.bids import find_manual_mask
    from lumbo_bids.utils.images import read_volume

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, nargs="+", default=[REPO / "examples" / "ds-spine-mini"])
    parser.add_argument("--conditions", nargs="*", default=None, help="a name per --bids (default: the folder names)")
    parser.add_argument("--localiser", type=Path, nargs="+", default=[SHIPPED_LOCALISER])
    parser.add_argument("--names", nargs="*", default=None, help="a name per --localiser (default: the paths)")
    parser.add_argument("--subjects", nargs="*", default=None, help="only these subjects (labels without 'sub-')")
    parser.add_argument("--reference", nargs="*", default=[], metavar="IMAGE=MASK", help="reference masks of unmasked images")
    parser.add_argument("--out", type=Path, default=None, help="append the rows to this TSV")
    args = parser.parse_args(argv)
    conditions = args.conditions or [b.name for b in args.bids]
    names = args.names or [str(p) for p in args.localiser]
    if len(conditions) != len(args.bids) or len(names) != len(args.localiser):
        parser.error("--conditions must name every --bids, --names every --localiser")
    references = dict(item.split("=", 1) for item in args.reference)
    writer = None
    if args.out:  # a row is written as soon as it is scored: a long evaluation cut short keeps its rows
        new = not args.out.is_file()
        out = args.out.open("a", newline="")
        writer = csv.DictWriter(out, FIELDS, delimiter="\t")
        if new:
            writer.writeheader()
    for name, localiser in zip(names, args.localiser):
        preprocessor = Preprocessor(0.5, localiser=localiser)
        for condition, bids in zip(conditions, args.bids):
            for image in sorted(bids.glob("sub-*/anat/*.nii*")):
                subject = image.name.split("_")[0][4:]
                if args.subjects and subject not in args.subjects:
                    continue
                stem = image.name.split(".nii")[0]
                mask_path, truth = find_manual_mask(image, bids, bids / "derivatives" / "labels"), "manual"
                data, affine, _ = read_volume(image)
                if mask_path is not None:
                    mask, _, _ = read_volume(mask_path)
                elif stem in references:
                    mask, truth = reference_on_grid(references[stem], data.shape, affine), "reference"
                else:
                    continue
                row = {"localiser": name, "condition": condition, "image": stem, "truth": truth}
                row.update(score(preprocessor, data, affine, mask))
                print("\t".join(str(row[k]) for k in FIELDS), flush=True)
                if writer is not None:
                    writer.writerow(row)
                    out.flush()
    if writer is not None:
        out.close()
    return 0


def reference_on_grid(path: str, shape, affine) -> np.ndarray:
    """A reference mask resampled (linear, > 0.5) onto the grid ``shape``/``affine``."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    img = nib.load(path)
    moved = resample_from_to(
        nib.Nifti1Image((np.asanyarray(img.dataobj) > 0.5).astype(np.float32), img.affine), (shape[:3], affine), order=1
    )
    return (np.asanyarray(moved.dataobj) > 0.5).astype(np.uint8)


if __name__ == "__main__":
    sys.exit(main())
