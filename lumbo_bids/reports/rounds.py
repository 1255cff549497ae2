"""``group/rounds.tsv``: each group run is a round of the study loop, and shows whether it converges.

At every group run the participant level's current automatic masks are kept
(``group/rounds/round-NN/<image>_mask.nii.gz``) and one row per image is added to ``rounds.tsv``:
the round, its rating in ``--qc-ratings``, where its training label came from (``manual``,
``accepted automatic mask`` or ``none``), and the Dice of its automatic mask against the one kept
by the last round that had it (how much the mask changed: near 1 when the loop has converged;
``n/a`` in its first round or when it did not change from an unchanged file).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from ..derivatives import atomic_write_text, image_output_path
from ..metrics import dice
from ..utils.numbers import format_float

LOGGER = logging.getLogger("lumbo_bids.group")
COLUMNS = ("round", "image", "rating", "label", "dice_vs_last_round")


def _rounds(rounds_dir: Path) -> list[int]:
    found = [re.fullmatch(r"round-(\d+)", p.name) for p in rounds_dir.glob("round-*") if p.is_dir()]
    return sorted(int(m.group(1)) for m in found if m)


def _last_kept(rounds_dir: Path, rounds: list[int], stem: str) -> Path | None:
    for number in reversed(rounds):
        path = rounds_dir / f"round-{number:02d}" / f"{stem}_mask.nii.gz"
        if path.is_file():
            return path
    return None


def write_round(output_dir: Path, anats: list, ratings: dict[str, str], labels: dict[str, str]) -> Path | None:
    """Keep this round's automatic masks and add its rows to ``group/rounds.tsv`` (its path; None
    when no image has an automatic mask yet).

    ``anats``: every selected image; ``ratings``: image -> rating; ``labels``: image -> label source."""
    group = Path(output_dir) / "group"
    rounds_dir = group / "rounds"
    previous = _rounds(rounds_dir)
    number = (previous[-1] if previous else 0) + 1
    kept = rounds_dir / f"round-{number:02d}"
    rows = []
    for anat in anats:
        mask = image_output_path(output_dir, anat, "mask")
        if not mask.is_file():
            continue
        last = _last_kept(rounds_dir, previous, anat.stem)
        change = "n/a"
        if last is not None:
            a, b = (np.asanyarray(nib.load(str(p)).dataobj) > 0 for p in (mask, last))
            change = format_float(dice(a, b), 4) if a.shape == b.shape else "n/a"
        kept.mkdir(parents=True, exist_ok=True)
        target = kept / f"{anat.stem}_mask.nii.gz"
        partial = kept / f".tmp-{target.name}"
        shutil.copyfile(mask, partial)
        os.replace(partial, target)
        rows.append([str(number), anat.stem, ratings.get(anat.stem, "unrated"), labels.get(anat.stem, "none"), change])
    if not rows:
        return None
    table = group / "rounds.tsv"
    old = table.read_text(encoding="utf-8").splitlines() if table.is_file() else ["\t".join(COLUMNS)]
    path = atomic_write_text(table, "\n".join([*old, *("\t".join(r) for r in rows)]) + "\n")
    changed = [float(r[4]) for r in rows if r[4] != "n/a"]
    summary = f"; median Dice against the last round {np.median(changed):.3f}" if changed else ""
    LOGGER.info("group: round %d of the study loop (%d image(s))%s: %s", number, len(rows), summary, path)
    return path
