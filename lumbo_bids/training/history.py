"""A training run's history: the ``metrics.tsv`` that :func:`~lumbo_bids.training.trainer.train` writes.

One row per epoch (tab-separated, ``CSVLogger``): read back as columns, cut back to the epochs
a resumed run keeps, and, at the group level, extended with the whole-image validation Dice.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np


def read_metrics(metrics_tsv: Path) -> dict[str, list[float]]:
    """Columns of a ``metrics.tsv`` written by :func:`~lumbo_bids.training.trainer.train` (``epoch`` as floats too)."""
    with open(metrics_tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    columns = list(rows[0]) if rows else []
    return {c: [float(r[c]) if r[c] not in ("", "NA", "n/a") else math.nan for r in rows] for c in columns}


def backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a ``BackupAndRestore`` backup (0 if none)."""
    meta = backup_dir / "training_metadata.json"
    if not (backup_dir / "latest.weights.h5").is_file() or not meta.is_file():
        return 0
    return int(json.loads(meta.read_text())["epoch"])


def truncate_metrics(metrics_tsv: Path, keep_before: int) -> float:
    """Drop rows of epochs >= ``keep_before`` (re-run after a resume); best ``val_dice`` kept."""
    if not metrics_tsv.is_file() or not (lines := metrics_tsv.read_text().splitlines()):
        return -math.inf
    kept = [ln for ln in lines[1:] if ln.strip() and int(float(ln.split("\t")[0])) < keep_before]
    metrics_tsv.write_text("\n".join([lines[0], *kept]) + "\n")
    val_dice = read_metrics(metrics_tsv).get("val_dice", [])
    return max((v for v in val_dice if math.isfinite(v)), default=-math.inf)


def plain_newlines(metrics_tsv: Path) -> None:
    """Rewrite ``metrics_tsv`` with plain newlines (``CSVLogger`` ends rows with CRLF, csv.excel)."""
    metrics_tsv.write_text("\n".join(metrics_tsv.read_text().splitlines()) + "\n")


def best_row(history: dict[str, list[float]]) -> int:
    """Row of the best finite ``val_dice`` in ``history`` (the first of ties); -1 when there is none."""
    val_dice = np.asarray(history.get("val_dice", []), dtype=float)
    return int(np.nanargmax(val_dice)) if val_dice.size and np.isfinite(val_dice).any() else -1


def with_image_dice(metrics_tsv: Path, before: float, after: float, kept_epoch: int) -> str:
    """``metrics.tsv`` text with a ``val_image_dice`` column: the mean whole-image validation Dice
    (segmented as the participant level does) before fine-tuning, as a first row ``epoch -1``,
    and of the kept model on the row of ``kept_epoch``; ``n/a`` elsewhere (patch Dice only)."""
    lines = [ln for ln in Path(metrics_tsv).read_text().splitlines() if ln.strip()]
    header = lines[0].split("\t")
    start = ["-1" if c == "epoch" else "n/a" for c in header] + [f"{before:.4f}"]
    rows = ["\t".join([*header, "val_image_dice"]), "\t".join(start)]
    for line in lines[1:]:
        epoch = int(float(line.split("\t")[0]))
        rows.append(f"{line}\t{after:.4f}" if epoch == kept_epoch else f"{line}\tn/a")
    return "\n".join(rows) + "\n"
