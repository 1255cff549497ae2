#!/usr/bin/env python3
"""Rate, don't draw, on the bundled data: fine-tune on accepted automatic masks alone, re-segment.

1. ``participant`` on every image with an empty labels dataset (no manual mask is given).
2. Rate each automatic mask as an expert would, here by its Dice against the manual mask that
   the run was not given: ``pass`` at ``--pass-dice`` or more, else ``fail`` (the ratings TSV in the
   study page's export format, with the model column).
3. ``group --qc-ratings`` fine-tunes on the passes alone (no manual mask anywhere).
4. ``participant --model OUT/group/model`` segments every image again; the table gives each
   image's Dice before and after, and whether it was rated pass (trained on) or fail (not seen).

Usage::

    .venv/bin/python scripts/experiment_rate_dont_draw.py --work work/rate --out work/rate/result.tsv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lumbo_bids.metrics import dice  # noqa: E402


def run(*args) -> None:
    command = [sys.executable, str(REPO / "run.py"), *map(str, args)]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def scores(out: Path, bids: Path) -> dict[str, tuple[float, str]]:
    """``{image: (Dice against its manual mask, model checksum)}`` of the automatic masks in ``out``."""
    found = {}
    for mask in sorted(out.glob("sub-*/**/anat/*_label-SC_desc-*_mask.nii.gz")):
        subject = mask.name.split("_")[0]
        meta = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
        source = meta["Sources"][0].removeprefix("bids:raw:")
        image = Path(source).name.split(".nii")[0]
        manual = list((bids / "derivatives" / "labels" / subject).rglob(f"{image}_*seg*.nii.gz"))
        if not manual:
            continue
        a = np.asanyarray(nib.load(mask).dataobj) > 0
        b = np.asanyarray(nib.load(manual[0]).dataobj) > 0.5
        found[image] = (float(dice(a, b)), meta["Model"]["Checksum"])
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="TSV: image, rating, dice_before, dice_after")
    parser.add_argument("--pass-dice", type=float, default=0.85)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    args = parser.parse_args(argv)
    labels = args.work / "no_labels"
    labels.mkdir(parents=True, exist_ok=True)
    out, seg, work = args.work / "out", args.work / "after", args.work / "work"
    common = ["--skip-bids-validation", "--labels-dir", labels, "--nprocs", "2", "-w", work]
    run(args.bids, out, "participant", *common)
    before = scores(out, args.bids)
    ratings = ["image\trating\tmodel\tnote"]
    for image, (score, model) in before.items():
        ratings.append(f"{image}\t{'pass' if score >= args.pass_dice else 'fail'}\t{model}\tDice {score:.3f}")
    (args.work / "ratings.tsv").write_text("\n".join(ratings) + "\n")
    run(args.bids, out, "group", *common, "--qc-ratings", args.work / "ratings.tsv", "--epochs", args.epochs,
        "--steps-per-epoch", args.steps_per_epoch, "--random-seed", "42")  # fmt: skip
    run(args.bids, seg, "participant", *common, "--model", out / "group" / "model")
    after = scores(seg, args.bids)
    rows = ["image\trating\tdice_before\tdice_after"]
    for image, (score, _) in before.items():
        rating = "pass" if score >= args.pass_dice else "fail"
        rows.append(f"{image}\t{rating}\t{score:.3f}\t{after[image][0]:.3f}")
    args.out.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
