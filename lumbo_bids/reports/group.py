"""Group summaries of the participant level's derivatives found in OUTPUT_DIR.

``group/group_evaluation.tsv`` (Dice, HD95, RVD of every image that has a manual mask),
``group/group_morphometrics.tsv`` (volume, length, mean CSA, conus tip of every image) and
``group/qc_flags.tsv`` (the QC failure flags and measures of every mask: lumbo_bids.qc) and
``group/group_report.html`` with a plot of Dice per image and Dice along the cord.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ..derivatives import atomic_write_text, read_json
from ..qc import MEASURES
from ..utils.numbers import format_float
from .assets import asset
from .figures import figure_png
from .study import MASK_SIDECARS, write_study_page

EVAL_COLUMNS = ("Dice", "HD95_mm", "RelativeVolumeDifference")
MORPH_COLUMNS = ("CordVolume_mm3", "CordLength_mm", "MeanCSA_mm2", "SlicesWithCord")


def _image_name(path: Path, suffix: str) -> str:
    return path.name.removesuffix(f"_{suffix}.json")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format_float(value, 4) if isinstance(value, float) else str(value)


def _collect(output_dir: Path, suffix: str) -> list[tuple[Path, dict]]:
    found = [(path, read_json(path)) for path in sorted(output_dir.glob(f"sub-*/**/*_{suffix}.json"))]
    return [(path, meta) for path, meta in found if meta is not None]


def _dice_plot(evaluations: list[tuple[Path, dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [_image_name(p, "evaluation") for p, _ in evaluations]
    left.barh(names, [m.get("Dice") or 0 for _, m in evaluations], color="tab:blue")
    left.set_xlim(0, 1)
    left.set_xlabel("Dice vs manual mask")
    for path, _ in evaluations:
        rows = [line.split("\t") for line in path.with_suffix(".tsv").read_text().splitlines()[1:]]
        values = np.array([np.nan if v == "n/a" else float(v) for _, v in rows])
        if values.size:
            position = np.linspace(0, 1, values.size)  # inferior (0) -> superior (1)
            right.plot(position, values, label=_image_name(path, "evaluation"), linewidth=1)
    right.set_xlabel("position along the image, inferior -> superior")
    right.set_ylabel("Dice per axial slice")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=6)
    fig.tight_layout()
    return figure_png(fig)


def qc_flags_tsv(output_dir: Path) -> str | None:
    """``group/qc_flags.tsv``: one row per mask sidecar with ``QCFlags`` (None: there is none).

    Columns: subject, session (n/a without), image (the source file name without .nii.gz),
    mask (path relative to OUTPUT_DIR), n_flags, flags (comma-separated; ``none``), then every
    measure of :data:`lumbo_bids.qc.MEASURES`.
    """
    rows = ["\t".join(["subject", "session", "image", "mask", "n_flags", "flags", *MEASURES])]
    for path, meta in _collect(output_dir, "mask"):
        if not isinstance(meta.get("QCFlags"), list):
            continue
        mask = next(path.parent.glob(path.name.removesuffix(".json") + ".nii*"), path.with_suffix(".nii.gz"))
        entities = dict(part.split("-", 1) for part in path.name.split("_") if "-" in part)
        sources = meta.get("Sources") or [""]
        image = str(sources[0]).rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".nii")
        measures = meta.get("QCMeasures") or {}
        flags = [str(flag) for flag in meta["QCFlags"]]
        cells = [entities.get("sub", "n/a"), entities.get("ses", "n/a"), image, mask.relative_to(output_dir).as_posix()]
        cells += [str(len(flags)), ",".join(flags) or "none", *(_fmt(measures.get(name)) for name in MEASURES)]
        rows.append("\t".join(cells))
    return "\n".join(rows) + "\n" if len(rows) > 1 else None


def write_group_summaries(output_dir: Path) -> list[Path]:
    """Write the group tables (and the HTML page when there is anything to show)."""
    group_dir = output_dir / "group"
    written = []
    evaluations = _collect(output_dir, "evaluation")
    morphometrics = _collect(output_dir, "morphometrics")
    if evaluations:
        rows = ["image\t" + "\t".join(EVAL_COLUMNS)]
        rows += [_image_name(p, "evaluation") + "\t" + "\t".join(_fmt(m.get(c)) for c in EVAL_COLUMNS) for p, m in evaluations]
        atomic_write_text(group_dir / "group_evaluation.tsv", "\n".join(rows) + "\n")
        written.append(group_dir / "group_evaluation.tsv")
    if morphometrics:
        header = "image\t" + "\t".join(MORPH_COLUMNS) + "\tconus_tip_x_mm\tconus_tip_y_mm\tconus_tip_z_mm"
        rows = [header]
        for path, meta in morphometrics:
            tip = meta.get("ConusTip_mm") or [None] * 3
            rows.append(
                "\t".join([_image_name(path, "morphometrics"), *(_fmt(meta.get(c)) for c in MORPH_COLUMNS), *map(_fmt, tip)])
            )
        atomic_write_text(group_dir / "group_morphometrics.tsv", "\n".join(rows) + "\n")
        written.append(group_dir / "group_morphometrics.tsv")
    if (qc_table := qc_flags_tsv(output_dir)) is not None:
        atomic_write_text(group_dir / "qc_flags.tsv", qc_table)
        written.append(group_dir / "qc_flags.tsv")
    if evaluations or morphometrics:
        parts = [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lumbo_bids group report</title>'
            f"<style>{asset('group.css')}</style></head><body><h1>lumbo_bids group report</h1>"
        ]
        if evaluations:
            mean = np.nanmean([m.get("Dice") if m.get("Dice") is not None else np.nan for _, m in evaluations])
            png = base64.b64encode(_dice_plot(evaluations)).decode()
            parts.append(f"<h2>Agreement with manual masks ({len(evaluations)} images, mean Dice {mean:.3f})</h2>")
            parts.append(f'<img alt="Dice per image and along the cord" src="data:image/png;base64,{png}">')
        loop = [group_dir / "rounds.tsv", group_dir / "to_correct" / "to_correct.tsv"]  # the study loop's tables
        for path in [*written, *(p for p in loop if p.is_file())]:
            lines = path.read_text().splitlines()
            cells = "".join(
                "<tr>" + "".join(f"<{t}>{html.escape(c)}</{t}>" for c in line.split("\t")) + "</tr>"
                for t, line in (("th" if i == 0 else "td", line) for i, line in enumerate(lines))
            )
            parts.append(f"<h2>{html.escape(path.name)}</h2><table>{cells}</table>")
        parts.append("</body></html>\n")
        atomic_write_text(group_dir / "group_report.html", "".join(parts))
        written.append(group_dir / "group_report.html")
    if any(output_dir.glob(MASK_SIDECARS)):  # the study QC page, with the tables above
        written.append(write_study_page(output_dir))
    return written
