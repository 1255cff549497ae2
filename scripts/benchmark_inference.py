#!/usr/bin/env python3
"""Time and peak memory of the participant level's steps on each example image, shipped models.

Per image: load -> reorient -> resample (0.5 mm) -> localise (shipped localiser, i.e. the
automatic path, worst case) -> centerline -> crop -> standardise -> segment (sliding window)
-> post-process -> back to native. Prints seconds per step, the total, and peak RSS; the same
pure functions the Nipype interfaces call, without Nipype's process overhead.

Usage: .venv/bin/python scripts/benchmark_inference.py [--dataset DIR] [--threads N] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lumbo_bids  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", type=Path, help="segmentation artifact to time (default: the shipped one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    from lumbo_bids.centerline import centerline_from_heatmap
    from lumbo_bids.geometry import (
        RPI,
        Grid,
        PreprocGeometry,
        crop_around_centerline,
        crop_box_from_centerline,
        reorient,
        resample_to_grid,
        resampled_grid,
        to_native,
    )  # fmt: skip
    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.localise import localise_heatmap
    from lumbo_bids.model.predictor import Predictor
    from lumbo_bids.model.selection import SHIPPED_LOCALISER, SHIPPED_SEGMENTATION
    from lumbo_bids.utils.images import read_volume

    seg = load_artifact(args.model or SHIPPED_SEGMENTATION)
    plan = seg.plan
    started = time.perf_counter()
    predictor = Predictor.from_artifact(seg)
    print(f"model load: {time.perf_counter() - started:.2f} s; threads: {args.threads}")
    steps = ["load", "reorient", "resample", "localise", "centerline", "crop", "standardise", "segment", "postproc", "native"]
    print(f"{'image':<28}{'shape':>16}" + "".join(f"{s:>11}" for s in steps) + f"{'total':>9}")
    for image in sorted(args.dataset.glob("sub-*/anat/*.nii.gz")):
        t = {}

        def timed(name, func):
            t0 = time.perf_counter()
            value = func()
            t[name] = time.perf_counter() - t0
            return value

        data, affine, _ = timed("load", lambda: read_volume(image))
        rpi_data, rpi_affine = timed("reorient", lambda: reorient(data, affine, RPI))
        rpi = Grid(tuple(rpi_data.shape), rpi_affine)
        grid = resampled_grid(rpi, plan.resolution)
        resampled = timed("resample", lambda: resample_to_grid(rpi_data, rpi_affine, grid, order=1))
        heat = timed("localise", lambda: localise_heatmap(SHIPPED_LOCALISER, resampled, grid.affine))
        xy = timed("centerline", lambda: centerline_from_heatmap(heat, zooms=grid.zooms))
        box = crop_box_from_centerline(xy, grid, plan.crop_size)
        stack = timed("crop", lambda: crop_around_centerline(resampled, box))
        std = timed("standardise", lambda: predictor.standardise(stack))
        prob = timed("segment", lambda: predictor.probability(std))
        mask = timed("postproc", lambda: predictor.mask(prob))
        geometry = PreprocGeometry(Grid(tuple(data.shape), affine), rpi, grid, box)
        timed("native", lambda: to_native(mask, geometry, order=1, threshold=0.5))
        total = sum(t.values())
        print(
            f"{image.name.split('.nii')[0]:<28}{str(data.shape):>16}"
            + "".join(f"{t[s]:>11.2f}" for s in steps)
            + f"{total:>9.2f}"
        )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
