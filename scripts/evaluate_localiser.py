#!/usr/bin/env python3
"""Accuracy of the automatic centerline (shipped localiser) against the manual-mask centerline.

For every image of a BIDS dataset with a manual mask: the participant level's automatic path
(reorient, resample to 0.5 mm, localiser heat-map, centerline) versus the centerline of the
manual mask, on the slices that contain cord: median and maximum in-plane distance (mm) and
the share of slices whose cord stays well inside the default 64x64 crop.

Usage: .venv/bin/python scripts/evaluate_localiser.py [--bids DIR] [--localiser PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from lumbo_bids.model.selection import SHIPPED_LOCALISER
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.utils.bids import find_manual_mask
    from lumbo_bids.utils.images import read_volume

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--localiser", type=Path, default=SHIPPED_LOCALISER)
    args = parser.parse_args(argv)
    preprocessor = Preprocessor(0.5, localiser=args.localiser)
    margin = 32 - 10  # half the 64-voxel crop, minus a cord radius (5 mm)
    for image in sorted(args.bids.glob("sub-*/anat/*.nii*")):
        mask_path = find_manual_mask(image, args.bids, args.bids / "derivatives" / "labels")
        if mask_path is None:
            continue
        data, affine, _ = read_volume(image)
        mask, _, _ = read_volume(mask_path)
        volume, cord, geometry = preprocessor.resample(data, affine, mask)  # the Reorient + Resample nodes
        truth = preprocessor.centerline(volume, geometry.resampled, cord)
        found = preprocessor.centerline(volume, geometry.resampled)  # the localiser's heat-map
        z = np.flatnonzero(cord.any(axis=(0, 1)))
        error = 0.5 * np.linalg.norm(found[z] - truth[z], axis=1)
        inside = np.mean(np.abs(found[z] - truth[z]).max(axis=1) < margin) * 100
        print(f"{image.name:34s} median {np.median(error):5.2f} mm  max {error.max():6.2f} mm  in crop {inside:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
