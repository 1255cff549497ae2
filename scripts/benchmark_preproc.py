#!/usr/bin/env python
"""Time and memory of each preprocessing step on the example dataset and on a large synthetic volume.

For every image of ds-spine-mini, and for one synthetic 512x512x1000 float32
volume at 0.5 mm (resampled to 0.5 mm), runs: load, reorient, resample,
centerline, crop, standardise, inverse (``to_native``) and prints per step the
wall time, the peak of memory allocated *during* the step (tracemalloc, which
numpy reports its buffers to) and the process's peak resident set so far
(``ru_maxrss``).

The centreline comes from the manual mask when the dataset has one (mask
reoriented + resampled with the mask rule, included in the step's figures);
images without a mask use a straight line through the image centre, labelled
``centre`` (there is no localiser model in this script).

Usage: ``python scripts/benchmark_preproc.py [--dataset DIR] [--no-synthetic]``
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lumbo_bids.centerline import centerline_from_mask  # noqa: E402
from lumbo_bids.geometry import (  # noqa: E402
    Grid,
    PreprocGeometry,
    crop_around_centerline,
    crop_box_from_centerline,
    load_volume,
    reorient,
    resample_mask_to_grid,
    resample_to_grid,
    resampled_grid,
    to_native,
)
from lumbo_bids.intensity import standardise  # noqa: E402

STEPS = ("load", "reorient", "resample", "centerline", "crop", "standardise", "inverse")
MB = 1024.0**2


def find_dataset() -> Path:
    """The dataset the tests use: $LUMBO_TEST_DATA, ../shared/data/ds-spine-mini or examples/."""
    candidates = [os.environ.get("LUMBO_TEST_DATA"), REPO.parent / "shared/data/ds-spine-mini"]
    candidates.append(REPO / "examples/ds-spine-mini")
    for cand in candidates:
        if cand and (Path(cand) / "dataset_description.json").is_file():
            return Path(cand)
    raise SystemExit("ds-spine-mini not found (use --dataset or LUMBO_TEST_DATA)")


def manual_mask(dataset: Path, image: Path) -> Path | None:
    """The first manual mask of ``image`` under derivatives/labels, if any."""
    folder = dataset / "derivatives" / "labels" / image.parent.relative_to(dataset)
    found = sorted(folder.glob(image.name.replace(".nii.gz", "") + "_*.nii.gz"))
    return found[0] if found else None


def measure(name: str, func: Callable[[], Any], row: dict[str, tuple]) -> Any:
    """Run ``func``; record (seconds, peak MB allocated during it, process max RSS MB)."""
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    peak = (tracemalloc.get_traced_memory()[1] - base) / MB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    row[name] = (seconds, peak, rss)
    return result


def centerline_step(mask: np.ndarray | None, mask_affine: np.ndarray | None, grid: Grid) -> np.ndarray:
    """Centreline on the resampled grid: from the manual mask, else the image's central line."""
    if mask is None:
        centre = (np.array(grid.shape[:2], dtype=float) - 1) / 2
        return np.tile(centre, (grid.shape[2], 1))
    rpi_mask, rpi_affine = reorient(mask, mask_affine)
    return centerline_from_mask(resample_mask_to_grid(rpi_mask, rpi_affine, grid))


def run_pipeline(
    load: Callable[[], tuple[np.ndarray, np.ndarray]],
    load_mask: Callable[[], tuple[np.ndarray | None, np.ndarray | None]],
    resolution: float,
) -> dict[str, tuple]:
    """All steps on one image; returns {step: (seconds, peak MB, max RSS MB)}."""
    row: dict[str, tuple] = {}
    data, affine = measure("load", load, row)
    rpi_data, rpi_affine = measure("reorient", lambda: reorient(data, affine), row)
    rpi = Grid(rpi_data.shape, rpi_affine)
    target = resampled_grid(rpi, resolution)
    resampled = measure("resample", lambda: resample_to_grid(rpi_data, rpi_affine, target), row)
    mask, mask_affine = load_mask()
    xy = measure("centerline", partial(centerline_step, mask, mask_affine, target), row)
    del mask
    box = crop_box_from_centerline(xy, target, (64, 64))
    stack = measure("crop", partial(crop_around_centerline, resampled, box), row)
    del resampled
    net_input = measure("standardise", lambda: standardise(stack, None), row)
    geom = PreprocGeometry(Grid(data.shape, affine), rpi, target, box)
    native = measure("inverse", lambda: to_native(net_input, geom), row)
    assert native.shape == data.shape
    return row


def print_row(label: str, shape: tuple, row: dict[str, tuple]) -> None:
    cells = "  ".join(f"{row[s][0]:6.2f}s {row[s][1]:7.1f}MB" for s in STEPS)
    print(f"{label:<34} {str(shape):<16} {cells}  maxrss {max(r[2] for r in row.values()):7.0f}MB", flush=True)


def real_images(dataset: Path, resolution: float) -> None:
    for image in sorted(dataset.glob("sub-*/anat/*.nii.gz")):
        mask_path = manual_mask(dataset, image)

        def load(image: Path = image) -> tuple[np.ndarray, np.ndarray]:
            img = nib.load(image)
            return load_volume(img), img.affine

        def load_mask(path: Path | None = mask_path) -> tuple:
            if path is None:
                return None, None
            img = nib.load(path)
            return load_volume(img), img.affine

        row = run_pipeline(load, load_mask, resolution)
        label = image.name.replace(".nii.gz", "") + ("" if mask_path else " (centre)")
        print_row(label, nib.load(image).shape, row)


def synthetic_cord(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Noise plus a bright tilted 3 mm-radius cord, and its mask, built slice by slice."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal(shape, dtype=np.float32) * 20 + 300
    mask = np.zeros(shape, dtype=np.uint8)
    ii, jj = np.ogrid[: shape[0], : shape[1]]
    for z in range(shape[2]):
        cx = shape[0] / 2 + 0.2 * (z - shape[2] / 2)
        cy = shape[1] / 2 + 30 * np.sin(z / shape[2] * np.pi)
        disc = (ii - cx) ** 2 + (jj - cy) ** 2 <= 6.0**2  # 6 voxels = 3 mm
        mask[:, :, z] = disc
        data[:, :, z][disc] += 500
    return data, mask


def synthetic(shape: tuple[int, int, int], resolution: float) -> None:
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    holder: dict[str, np.ndarray] = {}

    def load() -> tuple[np.ndarray, np.ndarray]:
        holder["data"], holder["mask"] = synthetic_cord(shape)
        return holder["data"], affine

    def load_mask() -> tuple[np.ndarray, np.ndarray]:
        return holder.pop("mask"), affine

    row = run_pipeline(load, load_mask, resolution)
    print_row("synthetic 0.5 mm -> 0.5 mm (load=make)", shape, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--resolution", type=float, default=0.5)
    parser.add_argument("--synthetic-shape", type=int, nargs=3, default=(512, 512, 1000))
    parser.add_argument("--no-synthetic", action="store_true")
    args = parser.parse_args()
    dataset = args.dataset or find_dataset()
    print(f"dataset {dataset}; resolution {args.resolution} mm; per step: wall time, peak MB allocated in the step")
    print(f"{'image':<34} {'native shape':<16} " + "  ".join(f"{s:>16}" for s in STEPS))
    tracemalloc.start()
    real_images(dataset, args.resolution)
    if not args.no_synthetic:
        synthetic(tuple(args.synthetic_shape), args.resolution)


if __name__ == "__main__":
    main()
