"""Rate, don't draw: automatic masks rated ``pass`` on the study page become training labels.

An image that has no manual mask and is rated ``pass`` in ``--qc-ratings`` is trained on with the
participant level's own mask of it (``OUTPUT_DIR/sub-XX/anat/..._mask.nii.gz``) as its label, an
*accepted automatic mask*; a manual mask, where one exists, is always preferred. The ratings TSV
that the study page exports records, per image, the checksum of the model that made the rated
mask (column ``model``, the mask sidecar's ``Model.Checksum``): a mask made since by another model
is not the one that was rated, and is refused. Nothing here runs Nipype or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .derivatives import image_output_path, read_json
from .errors import InvalidInputError, MissingInputError
from .ratings import read_rated_models, read_ratings

#: the label source of an image in the model card and the group report
MANUAL, ACCEPTED = "manual", "accepted automatic mask"


def accepted_images(output_dir: Path, ratings_path: Path | None, anats: list) -> list:
    """The images without a manual mask rated ``pass`` in ``ratings_path``, each as an
    ``AnatInput`` whose ``mask`` is its automatic mask in ``output_dir``.

    Raises
    ------
    MissingInputError
        (66) An image rated ``pass`` has no automatic mask in ``output_dir``.
    InvalidInputError
        (65) Its automatic mask was made by another model than the rated one (stale).
    """
    if ratings_path is None:
        return []
    ratings, models = read_ratings(ratings_path), read_rated_models(ratings_path)
    accepted = []
    for anat in anats:
        if anat.mask is not None or ratings.get(anat.stem, ("unrated", ""))[0] != "pass":
            continue
        mask = image_output_path(output_dir, anat, "mask")
        if not mask.is_file():
            raise MissingInputError(
                f"--qc-ratings {ratings_path}: {anat.stem} is rated pass, but {output_dir} has no automatic mask of it "
                f"({mask.name}); run the participant level into this OUTPUT_DIR first"
            )
        meta = read_json(image_output_path(output_dir, anat, "mask", extension=".json")) or {}
        now = str((meta.get("Model") or {}).get("Checksum", ""))
        rated = models.get(anat.stem, "")
        if rated and now != rated:
            raise InvalidInputError(
                f"--qc-ratings {ratings_path}: the mask of {anat.stem} that was rated pass came from model {rated[:19]}..., "
                f"but {mask} is now from model {now[:19] or 'unknown'}...: it is not the rated mask; rate it again on the "
                "study page"
            )
        accepted.append(dataclasses.replace(anat, mask=mask))
    return accepted


def label_source(anat, output_dir: Path) -> str:
    """:data:`ACCEPTED` when ``anat``'s mask is an automatic mask of ``output_dir``, else :data:`MANUAL`."""
    try:
        Path(anat.mask).resolve().relative_to(Path(output_dir).resolve())
    except ValueError:
        return MANUAL
    return ACCEPTED
