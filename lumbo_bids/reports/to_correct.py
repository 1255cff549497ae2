"""``group/to_correct/``: correct, don't draw. The automatic masks worth a person's minutes, ready to edit.

For the images rated ``fail`` on the study page and the first ones of ``annotate_next.tsv`` that
have no manual mask, the participant level's automatic mask is written as a manual mask would
be, on the source image's grid (same shape and affine, checked), under
``group/to_correct/sub-XX/[ses-YY/]anat/<source>_label-SC_seg.nii.gz`` with a JSON saying where it
came from. Moving a corrected file into the labels dataset (``BIDS_DIR/derivatives/labels``, or
``--labels-dir``) at the same relative path is all a user does: the next ``group`` run takes it
as a manual mask. ``group/to_correct/to_correct.tsv`` has one FSLeyes and one ITK-SNAP command
per image (the group report shows it).
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np

from ..derivatives import atomic_write_json, atomic_write_text, image_output_path, read_json
from ..utils.images import save_image

LOGGER = logging.getLogger("lumbo_bids.group")
#: how many of the first images of annotate_next.tsv get a starting point (besides those rated fail)
TOP_OF_ANNOTATE_NEXT = 5
COLUMNS = ("image", "reason", "mask", "fsleyes", "itksnap")
MANUAL_SUFFIX = "_label-SC_seg.nii.gz"


def correction_path(output_dir: Path, anat) -> Path:
    """Where the starting point of ``anat``'s manual mask goes (the labels dataset's layout)."""
    parts = [f"sub-{anat.subject}", *([f"ses-{anat.session}"] if anat.session else []), "anat"]
    return Path(output_dir, "group", "to_correct", *parts, anat.stem + MANUAL_SUFFIX)


def _top_of_annotate_next(output_dir: Path, n: int) -> list[str]:
    path = Path(output_dir) / "group" / "annotate_next.tsv"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    column = lines[0].split("\t").index("image") if lines else 0
    return [line.split("\t")[column] for line in lines[1 : n + 1] if line.strip()]


def write_to_correct(output_dir: Path, anats: list, rated_fail: set[str]) -> Path | None:
    """Write the starting points and ``to_correct.tsv``; its path, or None when there is none.

    ``anats``: every selected image (``AnatInput``); those with a manual mask are skipped. An
    image whose automatic mask is missing (participant level not run) or not on its source's
    grid is skipped with a warning."""
    top = _top_of_annotate_next(output_dir, TOP_OF_ANNOTATE_NEXT)
    reasons = {stem: "rated fail" for stem in rated_fail}
    for rank, stem in enumerate(top, start=1):
        reasons.setdefault(stem, f"rank {rank} in annotate_next.tsv")
    rows = ["\t".join(COLUMNS)]
    for anat in (a for a in anats if a.mask is None and a.stem in reasons):
        automatic = image_output_path(output_dir, anat, "mask")
        if not automatic.is_file():
            LOGGER.info("to correct: %s has no automatic mask in %s yet (run the participant level)", anat.stem, output_dir)
            continue
        source, mask = nib.load(str(anat.path)), nib.load(str(automatic))
        if mask.shape[:3] != source.shape[:3] or not np.allclose(mask.affine, source.affine, atol=1e-4):
            LOGGER.warning("to correct: %s: the automatic mask %s is not on the source's grid; skipped", anat.stem, automatic)
            continue
        out = correction_path(output_dir, anat)
        partial = out.with_name(f".tmp-{out.name}")  # written whole, then renamed
        save_image((np.asanyarray(mask.dataobj) > 0).astype(np.uint8), source.affine, partial, source, dtype=np.uint8)
        os.replace(partial, out)
        meta = read_json(image_output_path(output_dir, anat, "mask", extension=".json")) or {}
        atomic_write_json(
            out.with_name(out.name.replace(".nii.gz", ".json")),
            {
                "Description": "automatic cord mask, a starting point to correct; once corrected, move it (and this file) "
                "to the labels dataset at the same path under sub-XX/, where the next group run takes it as manual",
                "Reason": reasons[anat.stem],
                "Sources": [str(anat.path), str(automatic)],
                "Model": meta.get("Model"),
                "RunID": meta.get("RunID"),
                "QCFlags": meta.get("QCFlags"),
            },
        )
        image, edit = shlex.quote(str(anat.path)), shlex.quote(str(out))
        rows.append(
            "\t".join(
                [
                    anat.stem,
                    reasons[anat.stem],
                    str(out),
                    f"fsleyes {image} {edit} -ot mask -o -w 2",
                    f"itksnap -g {image} -s {edit}",
                ]
            )
        )
    if len(rows) == 1:
        return None
    table = atomic_write_text(Path(output_dir) / "group" / "to_correct" / "to_correct.tsv", "\n".join(rows) + "\n")
    LOGGER.info("to correct: %d automatic mask(s) ready to edit under %s", len(rows) - 1, table.parent)
    return table
