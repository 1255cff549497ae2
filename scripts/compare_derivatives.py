#!/usr/bin/env python3
"""Compare two lumbo_bids derivative folders (e.g. a native run and a containerised run).

Checks what the participant level writes under ``sub-*/`` (logs excluded): the same file list,
masks voxel-identical (or Dice >= --min-dice, reported), other images on the same grid with the
same values (to --atol), the same sidecars and CSV files. Exit 0 when they agree, 1 otherwise.

Usage: compare_derivatives.py REFERENCE_DIR OTHER_DIR [--min-dice 0.999] [--atol 1e-4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumbo_bids.metrics import dice  # noqa: E402


def derivative_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.glob("sub-*/**/*")
        if p.is_file() and "log" not in p.relative_to(root).parts
    }


def compare_file(a: Path, b: Path, min_dice: float, atol: float) -> str | None:
    """None when ``a`` and ``b`` agree, else what differs; prints a note for near-identical masks."""
    name = a.name
    if name.endswith((".nii", ".nii.gz")):
        ia, ib = nib.load(a), nib.load(b)
        if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=1e-6):
            return f"grid differs: {ia.shape} vs {ib.shape}"
        da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
        if name.endswith("_mask.nii.gz"):
            if np.array_equal(da, db):
                return None
            score = dice(da > 0, db > 0)
            print(f"  {a.name}: not voxel-identical, Dice {score:.5f} ({int((da != db).sum())} voxels differ)")
            return None if score >= min_dice else f"mask Dice {score:.5f} < {min_dice}"
        if not np.allclose(da, db, atol=atol):
            return f"values differ by up to {float(np.abs(da.astype(float) - db.astype(float)).max()):.3g}"
        return None
    if name.endswith(".json"):
        return None if json.loads(a.read_text()) == json.loads(b.read_text()) else "JSON differs"
    return None if a.read_bytes() == b.read_bytes() else "content differs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--min-dice", type=float, default=0.999)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    ref, other = derivative_files(args.reference), derivative_files(args.other)
    problems = [f"only in {args.reference}: {f}" for f in sorted(ref - other)]
    problems += [f"only in {args.other}: {f}" for f in sorted(other - ref)]
    for rel in sorted(ref & other):
        if problem := compare_file(args.reference / rel, args.other / rel, args.min_dice, args.atol):
            problems.append(f"{rel}: {problem}")
    for line in problems:
        print(f"  DIFFERENT {line}")
    verdict = "agree" if not problems else f"differ ({len(problems)} problem(s))"
    print(f"compare_derivatives: {len(ref)} vs {len(other)} files; {args.reference} and {args.other} {verdict}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
