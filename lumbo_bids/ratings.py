"""QC ratings: the TSV that the study page (``OUTPUT_DIR/qc/index.html``) exports, read back.

One row per image, ``image<TAB>rating<TAB>model<TAB>note`` (the header names the columns; ``model``
is optional): ``image`` is the source file's name without ``.nii(.gz)`` (``sub-01_T2w``,
:attr:`~lumbo_bids.utils.bids.AnatInput.stem`), ``rating`` one of ``pass``, ``fail``,
``unrated``, ``model`` the checksum of the model that made the rated mask. The group level leaves
the images rated ``fail`` out of fine-tuning (:func:`exclude_failed`) and trains on the automatic
masks rated ``pass`` of images without a manual mask (:mod:`lumbo_bids.accepted`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .errors import InvalidInputError, MissingInputError

RATINGS = ("pass", "fail", "unrated")
COLUMNS = ("image", "rating", "note")


def _image_name(value: str) -> str:
    """``sub-01_T2w`` from ``sub-01_T2w``, ``sub-01_T2w.nii.gz`` or ``sub-01_T2w.nii``."""
    return value.strip().removesuffix(".gz").removesuffix(".nii")


def _header(path: Path, line: str) -> list[str]:
    header = [name.strip().lower() for name in line.lstrip("\ufeff").split("\t")]
    missing = [name for name in ("image", "rating") if name not in header]
    if missing:
        raise InvalidInputError(
            f"{path}, row 1: the header must name the columns image, rating and note (tab-separated); "
            f"missing {', '.join(missing)} in {line.strip()!r}",
        )
    return header


def read_ratings(path: Path) -> dict[str, tuple[str, str]]:
    """``{image: (rating, note)}`` from a ratings TSV; a one-line :class:`LumboError` naming the
    file and row when it is missing, unreadable or malformed (an unknown rating, an empty or
    repeated image, a row with the wrong number of columns)."""
    return {image: (rating, note) for _, image, rating, note in read_rating_rows(path)}


def read_rating_rows(path: Path) -> list[tuple[int, str, str, str]]:
    """``(row number, image, rating, note)`` of each rating in the TSV, checked as :func:`read_ratings` says."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MissingInputError(f"QC ratings file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"QC ratings file {path} cannot be read: {exc}") from None
    if not lines or not lines[0].strip():
        raise InvalidInputError(f"{path}, row 1: empty file; expected the header image, rating, note")
    header = _header(path, lines[0])
    ratings: list[tuple[int, str, str, str]] = []
    rows: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == len(header) - 1 and header[-1] == "note":
            fields.append("")  # a trailing empty note whose tab a spreadsheet dropped
        if len(fields) != len(header):
            raise InvalidInputError(
                f"{path}, row {number}: {len(fields)} tab-separated field(s), the header has {len(header)}",
            )
        row = dict(zip(header, fields))
        image, rating = _image_name(row["image"]), row["rating"].strip().lower()
        if not image:
            raise InvalidInputError(f"{path}, row {number}: the image name is empty")
        if rating not in RATINGS:
            raise InvalidInputError(
                f"{path}, row {number}: rating {row['rating']!r} of {image} is not one of {', '.join(RATINGS)}",
            )
        if image in rows:
            raise InvalidInputError(f"{path}, row {number}: {image} was already rated in row {rows[image]}")
        rows[image] = number
        ratings.append((number, image, rating, row.get("note", "").strip()))
    return ratings


def read_rated_models(path: Path) -> dict[str, str]:
    """``{image: model checksum}`` from the optional ``model`` column of a ratings TSV (the study
    page writes the checksum of the model that made each rated mask); ``{}`` without the column.
    The file is checked first as :func:`read_ratings` says."""
    read_rating_rows(path)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = _header(Path(path), lines[0])
    if "model" not in header:
        return {}
    column, found = header.index("model"), {}
    for line in lines[1:]:
        fields = line.split("\t")
        if line.strip() and len(fields) > column and fields[column].strip():
            found[_image_name(fields[header.index("image")])] = fields[column].strip()
    return found


def unmatched_rows(path: Path, images) -> list[tuple[int, str, str, str]]:
    """``(row number, image, rating, closest image name or "")`` of each row of the ratings TSV
    ``path`` whose image is none of ``images`` (image names, ``AnatInput.stem``)."""
    images = set(images)
    by_lower = {name.lower(): name for name in images}
    unmatched = []
    for number, image, rating, _ in read_rating_rows(path):
        if image in images:
            continue
        close = by_lower.get(image.lower()) or next(iter(difflib.get_close_matches(image, images, n=1, cutoff=0.8)), "")
        unmatched.append((number, image, rating, close))
    return unmatched


def format_ratings(ratings: dict[str, tuple[str, str]]) -> str:
    """The TSV text of ``ratings`` (the study page's export format); tabs and line breaks in a
    note become single spaces."""
    lines = ["\t".join(COLUMNS)]
    for image, (rating, note) in ratings.items():
        if rating not in RATINGS:
            raise ValueError(f"rating {rating!r} of {image} is not one of {', '.join(RATINGS)}")
        lines.append("\t".join([image, rating, " ".join(str(note).split())]))
    return "\n".join(lines) + "\n"


def exclude_failed(anats: list, ratings: dict[str, tuple[str, str]]) -> tuple[list, list]:
    """``(kept, excluded)``: the :class:`~lumbo_bids.utils.bids.AnatInput` rated ``fail``
    (by ``anat.stem``) are excluded, the others (passed, unrated, not rated) kept, in order."""
    kept, excluded = [], []
    for anat in anats:
        (excluded if ratings.get(anat.stem, ("unrated", ""))[0] == "fail" else kept).append(anat)
    return kept, excluded
