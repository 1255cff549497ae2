#!/usr/bin/env python3
"""Compare two lumbo_bids derivative folders (e.g. a native run and a containerised run).

Checks what the participant level writes under ``sub-*/`` (logs excluded):

- the same file list;
- images on the same grid: masks voxel-identical (or Dice >= --min-dice, reported), other
  images with the same values to --image-atol (``numpy.allclose``);
- tables (``.tsv``, ``.csv``) and JSON by value (a sidecar's ``RunID``, the run that wrote it, aside): the same columns, row counts and keys, text
  (``n/a`` included) exactly, numbers within ``--atol + --rtol * |reference value|``, so that
  ``-0.000`` and ``0.000`` or a last-digit rounding difference agree;
- any other file byte for byte.

It prints the largest difference that it tolerated for each kind of file. Exit 0 when the
folders agree, 1 otherwise.

Usage: compare_derivatives.py REFERENCE_DIR OTHER_DIR [--min-dice 0.999] [--image-atol 1e-4]
                              [--atol 1e-3] [--rtol 1e-4]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumbo_bids.metrics import dice

#: What the summary calls the tolerated difference of each kind of file.
KINDS = {"image": "image values", "mask": "mask voxels", "table": "table numbers", "json": "JSON numbers"}


def derivative_files(root: Path) -> set[str]:
    """Paths (relative to ``root``) of the files under ``sub-*/``, logs excluded."""
    return {str(p.relative_to(root)) for p in root.glob("sub-*/**/*") if p.is_file() and "log" not in p.relative_to(root).parts}


def file_kind(path: Path) -> str:
    """``mask``, ``image``, ``table``, ``json`` or ``other``."""
    name = path.name
    if name.endswith("_mask.nii.gz"):
        return "mask"
    if name.endswith((".nii", ".nii.gz")):
        return "image"
    if name.endswith((".tsv", ".csv")):
        return "table"
    return "json" if name.endswith(".json") else "other"


# -- tables and JSON: leaves compared by value --------------------------------------------
def cell(text: str) -> float | str:
    """A table cell as a number when it reads as one, else the text itself (``n/a``...)."""
    try:
        return float(text)
    except ValueError:
        return text


def read_table(path: Path) -> tuple[list[str], list[list[float | str]]]:
    """Header and rows of a TSV (tab) or CSV (comma) file, cells through :func:`cell`."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t" if path.name.endswith(".tsv") else ","))
    return (rows[0], [[cell(text) for text in row] for row in rows[1:]]) if rows else ([], [])


def table_leaves(header: list[str], rows: list[list[float | str]]) -> dict[str, float | str]:
    """``{"row 3 x_mm": value}`` for every cell (extra cells of a ragged row: ``column N``)."""
    return {
        f"row {i} {header[j] if j < len(header) else f'column {j + 1}'}": value
        for i, row in enumerate(rows, start=1)
        for j, value in enumerate(row)
    }


def json_leaves(value, path: str = "") -> dict[str, object]:
    """The leaves of a JSON document by path (``Model.files[0].sha256``); ``{}`` and ``[]`` are leaves."""
    if isinstance(value, dict) and value:
        items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        return {path or "(document)": value}
    return {key: leaf for sub, item in items for key, leaf in json_leaves(item, sub).items()}


def is_number(value) -> bool:
    """Whether ``value`` is an int or a float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_leaves(ref: dict, other: dict, atol: float, rtol: float) -> tuple[str | None, float]:
    """Compare two ``{path: value}`` mappings.

    Parameters
    ----------
    ref, other : dict
        Leaves of the reference and of the other file (:func:`table_leaves`, :func:`json_leaves`).
    atol, rtol : float
        Numbers agree when ``|other - ref| <= atol + rtol * |ref|`` (NaN equals NaN, an infinity
        only itself); any other value must be equal and of the same type.

    Returns
    -------
    problem : str or None
        None when every leaf agrees, else what differs (the count and the first difference).
    tolerated : float
        The largest difference between two numbers that agreed.
    """
    if ref.keys() != other.keys():
        missing, extra = sorted(ref.keys() - other.keys()), sorted(other.keys() - ref.keys())
        return f"keys differ: only in reference {missing[:3]}, only in other {extra[:3]}", 0.0
    tolerated, bad = 0.0, []
    for key, a in ref.items():
        b = other[key]
        if is_number(a) and is_number(b):
            gap = 0.0 if a == b or (math.isnan(a) and math.isnan(b)) else abs(a - b)
            if math.isfinite(gap) and gap <= atol + rtol * abs(a):
                tolerated = max(tolerated, gap)
                continue
        elif type(a) is type(b) and a == b:
            continue
        bad.append(f"{key}: {a!r} vs {b!r}")
    if bad:
        return f"{len(bad)} value(s) differ beyond atol {atol:g} + rtol {rtol:g}, first {bad[0]}", tolerated
    return None, tolerated


# -- one file ------------------------------------------------------------------------------
def compare_file(a: Path, b: Path, args: argparse.Namespace) -> tuple[str | None, float]:
    """What differs between ``a`` and ``b`` (None when they agree) and the difference tolerated.

    The tolerated difference is the largest number difference for tables and JSON, the
    largest voxel difference for images and the number of differing voxels for masks.
    """
    kind = file_kind(a)
    if kind in ("image", "mask"):
        ia, ib = nib.load(a), nib.load(b)
        if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=1e-6):
            return f"grid differs: {ia.shape} vs {ib.shape}", 0.0
        da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
        if kind == "mask":
            if np.array_equal(da, db):
                return None, 0.0
            score, changed = dice(da > 0, db > 0), int((da != db).sum())
            print(f"  {a.name}: not voxel-identical, Dice {score:.5f} ({changed} voxels differ)")
            return (None if score >= args.min_dice else f"mask Dice {score:.5f} < {args.min_dice}"), changed
        gap = float(np.abs(da.astype(float) - db.astype(float)).max()) if da.size else 0.0
        if not np.allclose(da, db, atol=args.image_atol):
            return f"values differ by up to {gap:.3g}", 0.0
        return None, gap
    if kind == "table":
        (head_a, rows_a), (head_b, rows_b) = read_table(a), read_table(b)
        if head_a != head_b:
            return f"columns differ: {head_a} vs {head_b}", 0.0
        if len(rows_a) != len(rows_b):
            return f"{len(rows_a)} vs {len(rows_b)} rows", 0.0
        return compare_leaves(table_leaves(head_a, rows_a), table_leaves(head_b, rows_b), args.atol, args.rtol)
    if kind == "json":
        try:
            doc_a, doc_b = json.loads(a.read_text()), json.loads(b.read_text())
        except ValueError:
            return (None if a.read_bytes() == b.read_bytes() else "not valid JSON, and the bytes differ"), 0.0
        for doc in (doc_a, doc_b):
            if isinstance(doc, dict):
                doc.pop("RunID", None)  # which run wrote the file: differs between any two runs
        return compare_leaves(json_leaves(doc_a), json_leaves(doc_b), args.atol, args.rtol)
    return (None if a.read_bytes() == b.read_bytes() else "content differs"), 0.0


def main(argv=None) -> int:
    """Compare the folders named in ``argv`` (default: the command line); 0 when they agree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--min-dice", type=float, default=0.999, help="masks: lowest Dice accepted (default 0.999)")
    parser.add_argument("--image-atol", type=float, default=1e-4, help="images: absolute tolerance (default 1e-4)")
    parser.add_argument("--atol", type=float, default=1e-3, help="tables and JSON: absolute tolerance (default 1e-3)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tables and JSON: relative tolerance (default 1e-4)")
    args = parser.parse_args(argv)
    ref, other = derivative_files(args.reference), derivative_files(args.other)
    problems = [f"only in {args.reference}: {f}" for f in sorted(ref - other)]
    problems += [f"only in {args.other}: {f}" for f in sorted(other - ref)]
    largest: dict[str, tuple[float, str]] = {}  # kind -> (largest tolerated difference, file)
    for rel in sorted(ref & other):
        problem, tolerated = compare_file(args.reference / rel, args.other / rel, args)
        kind = file_kind(Path(rel))
        if problem:
            problems.append(f"{rel}: {problem}")
        elif kind in KINDS and (kind not in largest or tolerated > largest[kind][0]):
            largest[kind] = (tolerated, rel)
    for line in problems:
        print(f"  DIFFERENT {line}")
    summary = [
        f"{KINDS[kind]} {amount:.3g}" + (f" ({rel})" if amount else "")
        for kind, (amount, rel) in sorted(largest.items(), key=lambda item: list(KINDS).index(item[0]))
    ]
    print(f"  largest tolerated difference: {'; '.join(summary) or 'none (no image, table or JSON compared)'}")
    verdict = "agree" if not problems else f"differ ({len(problems)} problem(s))"
    print(f"compare_derivatives: {len(ref)} vs {len(other)} files; {args.reference} and {args.other} {verdict}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
