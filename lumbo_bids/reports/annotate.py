"""``group/annotate_next.tsv``: the unlabelled images ranked by how much a manual mask would help.

Reads what the participant level wrote for each image (the mask sidecar's ``QCFlags`` and
``QCMeasures``, the morphometrics sidecar) and the source image's header; the ranking itself is
:func:`lumbo_bids.annotate.rank_for_annotation`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from ..annotate import Candidate, Ranked, acquisition_features, anatomy_features, rank_for_annotation
from ..derivatives import atomic_write_text, image_output_path, read_json
from ..utils.numbers import format_float

LOGGER = logging.getLogger("lumbo_bids.group")
COLUMNS = ("rank", "image", "subject", "score", "reason", "uncertainty", "novelty", "nearest_annotated", "source")


def header_features(path: Path, contrast: str) -> dict[str, float]:
    """:func:`acquisition_features` of an image from its header (voxel sizes and shape along R, A, S)."""
    img = nib.load(str(path))
    axes = nib.orientations.io_orientation(img.affine)[:, 0].astype(int)
    zooms, shape = np.empty(3), np.empty(3)
    zooms[axes], shape[axes] = img.header.get_zooms()[:3], img.shape[:3]
    return acquisition_features(zooms, shape, contrast)


def uncertainty_of(mask_meta: dict | None) -> tuple[float, str]:
    """Uncertainty in [0, 1] of an automatic mask from its sidecar: 1 without one (not segmented
    yet); otherwise ``1 - confidence``, the confidence being the network's mean margin under the
    mask (``QCMeasures.margin_in_mask``, 2p - 1; 1 when absent), halved by each raised QC flag."""
    if mask_meta is None:
        return 1.0, "not segmented yet (run the participant level)"
    flags = list(mask_meta.get("QCFlags") or [])
    margin = (mask_meta.get("QCMeasures") or {}).get("margin_in_mask")
    margin = float(np.clip(margin, 0.0, 1.0)) if isinstance(margin, (int, float)) and np.isfinite(margin) else 1.0
    return 1.0 - margin * 0.5 ** len(flags), (f"flags: {', '.join(flags)}" if flags else "")


def study_candidates(output_dir: Path, anats: list, rated_fail: set[str] = frozenset()) -> list[Candidate]:
    """Every selected image (``AnatInput``), described from its header and its participant outputs."""
    candidates = []
    for anat in anats:
        try:
            features = header_features(anat.path, anat.contrast)
        except (OSError, nib.filebasedimages.ImageFileError) as exc:
            LOGGER.warning("annotate next: %s skipped: %s", anat.path, exc)
            continue
        labelled = anat.mask is not None
        mask_meta = None if labelled else read_json(image_output_path(output_dir, anat, "mask", extension=".json"))
        morph = read_json(image_output_path(output_dir, anat, "morphometrics", extension=".json"))
        uncertainty, why = (0.0, "") if labelled else uncertainty_of(mask_meta)
        candidates.append(
            Candidate(
                image=anat.stem,
                subject=anat.subject,
                labelled=labelled,
                features={**features, **anatomy_features(morph)},
                uncertainty=uncertainty,
                rated_fail=anat.stem in rated_fail,
                why_uncertain=why,
            )
        )
    return candidates


def annotate_next_table(ranked: list[Ranked], sources: dict[str, str]) -> str:
    rows = ["\t".join(COLUMNS)]
    for r in ranked:
        c = r.candidate
        values = (r.rank, c.image, c.subject, format_float(r.score, 3), r.reason, format_float(c.uncertainty, 3),
                  format_float(r.novelty, 3), r.nearest or "n/a", sources.get(c.image, "n/a"))  # fmt: skip
        rows.append("\t".join(str(v) for v in values))
    return "\n".join(rows) + "\n"


def write_annotate_next(output_dir: Path, anats: list, bids_dir: Path, rated_fail: set[str] = frozenset()) -> Path | None:
    """Rank the images without a manual mask; ``group/annotate_next.tsv`` (None when every image has one)."""
    candidates = study_candidates(output_dir, anats, rated_fail)
    ranked = rank_for_annotation(candidates)
    if not ranked:
        return None
    sources = {a.stem: Path(a.path).relative_to(bids_dir).as_posix() for a in anats if _inside(a.path, bids_dir)}
    path = atomic_write_text(Path(output_dir) / "group" / "annotate_next.tsv", annotate_next_table(ranked, sources))
    top = ranked[0]
    LOGGER.info(
        "annotate next: %d unlabelled image(s) ranked; first %s (%s): %s", len(ranked), top.candidate.image, top.reason, path
    )
    return path


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True
