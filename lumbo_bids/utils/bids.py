"""Dataset discovery with pybids, manual-mask lookup and input validation."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    InvalidDatasetError,
    InvalidInputError,
    LumboError,
    MissingInputError,
    NothingSelectedError,
    UsageError,
)

LOGGER = logging.getLogger("lumbo_bids.bids")

DEFAULT_ANAT_QUERY = {
    "datatype": "anat",
    # T2star is the deprecated spelling of T2starw; both are accepted.
    "suffix": ["T2w", "T1w", "T2starw", "T2star"],
    "extension": [".nii.gz", ".nii"],
}
# Mask suffixes tried, in order: spine-generic/BIDS style, then the legacy SCT/ivadomed one.
MASK_SUFFIXES = ("_label-SC_seg", "_seg-manual", "_label-SC_mask")
_IGNORE = [
    re.compile(r"^/(code|sourcedata|derivatives|models|stimuli|work)(/|$)"),
    re.compile(r"/\."),
]


@dataclass(frozen=True)
class AnatInput:
    """One anatomical image to segment, with its manual mask when one exists."""

    path: Path
    subject: str
    session: str | None
    suffix: str
    mask: Path | None = None
    entities: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def stem(self) -> str:
        """File name without ``.nii(.gz)``."""
        return self.path.name.split(".nii")[0]

    @property
    def contrast(self) -> str:
        """Contrast name used for models and output ``desc`` (T2star -> T2starw)."""
        return "T2starw" if self.suffix == "T2star" else self.suffix

    @property
    def label(self) -> str:
        """How progress lines name the image: its entities and contrast, e.g. ``sub-01 ses-02
        acq-sag T2w`` (every entity of the file name, so two sessions never read alike)."""
        entities = self.stem.split("_")[:-1]
        return " ".join([*entities, self.contrast])


def read_dataset_description(bids_dir: Path) -> dict:
    """Return the raw dataset's description, or raise a one-line :class:`LumboError`."""
    if not bids_dir.is_dir():
        raise MissingInputError(f"BIDS_DIR {bids_dir} does not exist or is not a folder")
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise MissingInputError(f"{description} is missing: {bids_dir} is not a BIDS dataset")
    try:
        data = json.loads(description.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{description} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "Name" not in data or "BIDSVersion" not in data:
        raise InvalidInputError(f"{description} must be a JSON object with 'Name' and 'BIDSVersion'")
    return data


def load_filters(path: Path | None) -> dict:
    """Read a filter file (``--bids-filter-file``): ``{"anat": {pybids entity: value(s)}}``."""
    if path is None:
        return {}
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist")
    try:
        filters = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(filters, dict) or not all(isinstance(v, dict) for v in filters.values()):
        raise UsageError(
            f"{path} must map input names (e.g. 'anat') to pybids queries",
        )
    unknown = set(filters) - {"anat"}
    if unknown:
        raise UsageError(f"{path}: unknown input(s) {sorted(unknown)}; known: 'anat'")
    return filters


#: pybids query keywords a filter may use besides entities
_QUERY_KEYWORDS = {"scope", "regex_search"}
_FILTER_SCALARS = (str, int, float, bool, type(None))


def check_filters(layout, filters: dict, path: Path | None) -> None:
    """Refuse unknown entities and odd values in a filter file (:class:`UsageError`)."""
    known = set(layout.get_entities()) | _QUERY_KEYWORDS
    for name, query in filters.items():
        for key, value in query.items():
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UsageError(f"{path}: {name}: {key!r} is not a BIDS entity{hint}")
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, _FILTER_SCALARS) for v in values):
                raise UsageError(
                    f"{path}: {name}: {key!r} must be a value or a list of values",
                )


def build_layout(bids_dir: Path, database_dir: Path | None = None):
    """Index ``bids_dir`` with pybids, ignoring code/sourcedata/derivatives; optional persisted DB."""
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, ignore=_IGNORE, index_metadata=False)
    kwargs = {}
    if database_dir is not None:
        database_dir.mkdir(parents=True, exist_ok=True)
        kwargs["database_path"] = str(database_dir)
    return BIDSLayout(str(bids_dir), indexer=indexer, validate=False, **kwargs)


def select_subjects(layout, requested: list[str] | None) -> list[str]:
    """Subjects to process; unknown labels are a usage error that lists them."""
    available = sorted(layout.get_subjects())
    if not requested:
        if not available:
            raise NothingSelectedError(f"no subject folder (sub-*) found in {layout.root}")
        return available
    missing = sorted(set(requested) - set(available))
    if missing:
        raise UsageError(
            f"participant label(s) not found in {layout.root}: {', '.join(missing)} "
            f"(available: {', '.join(available) or 'none'})",
        )
    return sorted(dict.fromkeys(requested))


def find_manual_mask(image: Path, bids_dir: Path, labels_dir: Path) -> Path | None:
    """Manual cord mask of ``image`` under ``labels_dir`` (same relative folder), if any: the
    first of :data:`MASK_SUFFIXES` (``.nii.gz`` before ``.nii``), with a warning naming the
    others when there are several."""
    relative = image.parent.relative_to(bids_dir)
    stem = image.name.split(".nii")[0]
    found = [
        candidate
        for suffix in MASK_SUFFIXES
        for ext in (".nii.gz", ".nii")
        if (candidate := labels_dir / relative / f"{stem}{suffix}{ext}").is_file() or candidate.is_symlink()
    ]  # a dangling link is reported later
    if len(found) > 1:
        LOGGER.warning(
            "%s: %d manual masks in %s: using %s, not %s (the order: %s)",
            image, len(found), found[0].parent, found[0].name, ", ".join(p.name for p in found[1:]),
            ", ".join(MASK_SUFFIXES),
        )  # fmt: skip
    return found[0] if found else None


_ANNEX_POINTER = b"/annex/objects/"


def content_missing(path: Path) -> bool:
    """Whether ``path`` is a git-annex/DataLad file whose content was never fetched.

    Locked annexed files are symlinks into ``.git/annex/objects`` that dangle until
    ``datalad get``; unlocked ones are small pointer files starting with ``/annex/objects/``.
    """
    if not path.exists():
        return path.is_symlink()
    if path.stat().st_size > 1024:
        return False
    with open(path, "rb") as handle:
        return handle.read(len(_ANNEX_POINTER)) == _ANNEX_POINTER


def missing_content_message(path: Path) -> str:
    return f"{path}: file content not present (git-annex/DataLad? run `datalad get`)"


def unavailable_files(anat: AnatInput) -> list[Path]:
    """The image and mask files of ``anat`` whose content is not on disk."""
    return [p for p in (anat.path, anat.mask) if p is not None and content_missing(p)]


def split_available(inputs: dict[str, list[AnatInput]]) -> tuple[dict, dict[str, list[str]]]:
    """``(inputs whose files are all present, {subject: one message per missing file})``."""
    available: dict[str, list[AnatInput]] = {}
    missing: dict[str, list[str]] = {}
    for subject, anats in inputs.items():
        for anat in anats:
            absent = unavailable_files(anat)
            if absent:
                missing.setdefault(subject, []).extend(missing_content_message(p) for p in absent)
            else:
                available.setdefault(subject, []).append(anat)
    return available, missing


def collect_anat(
    layout,
    subjects: list[str],
    sessions: list[str] | None,
    filters: dict,
    labels_dir: Path,
) -> dict[str, list[AnatInput]]:
    """Anatomical images per subject, after filters, each with its manual mask (or None)."""
    bids_dir = Path(layout.root)
    query = {**DEFAULT_ANAT_QUERY, **filters.get("anat", {})}
    if sessions:
        query["session"] = sessions
    found: dict[str, list[AnatInput]] = {}
    for subject in subjects:
        try:
            files = layout.get(subject=subject, return_type="object", **query)
        except (ValueError, TypeError) as exc:  # pybids refuses the query (filters are checked first)
            raise UsageError(f"invalid BIDS query {query}: {exc}") from None
        items = []
        for bids_file in sorted(files, key=lambda f: f.path):
            entities = bids_file.get_entities()
            path = Path(bids_file.path)
            items.append(
                AnatInput(
                    path=path,
                    subject=subject,
                    session=entities.get("session"),
                    suffix=entities["suffix"],
                    mask=find_manual_mask(path, bids_dir, labels_dir),
                    entities=entities,
                )
            )
        if items:
            found[subject] = items
    if not found:
        raise NothingSelectedError(
            f"the BIDS filters selected no anatomical image in {bids_dir} "
            f"(query: {json.dumps({k: v for k, v in query.items()}, default=str)})",
        )
    return found


def validate_dataset(bids_dir: Path, subjects: list[str]) -> None:
    """Run ``bids-validator-deno`` on ``bids_dir`` restricted to ``subjects``.

    As fMRIPrep does, the selected subjects and the top-level files are linked into a
    temporary folder so that the validator only sees them. Errors -> exit code 16.
    """
    executable = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    if not Path(executable).exists():
        raise LumboError("bids-validator-deno is not installed: install it or pass --skip-bids-validation")
    with tempfile.TemporaryDirectory(prefix="lumbo_bids_validate_") as tmp:
        view = Path(tmp) / bids_dir.name
        view.mkdir()
        for entry in bids_dir.iterdir():
            if entry.name.startswith("sub-") and entry.name.removeprefix("sub-") not in subjects:
                continue
            if entry.name in {"derivatives", "sourcedata", "code"}:
                continue
            (view / entry.name).symlink_to(entry)
        if (bids_dir / "participants.tsv").is_file() and len(subjects) < len(list(bids_dir.glob("sub-*"))):
            # keep participants.tsv consistent with the subset shown to the validator
            (view / "participants.tsv").unlink()
            rows = (bids_dir / "participants.tsv").read_text(encoding="utf-8").splitlines()
            kept = rows[:1] + [r for r in rows[1:] if r.split("\t")[0].removeprefix("sub-") in subjects]
            (view / "participants.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
        # deno's cache: the run's (in the work dir) once set up, else this temporary folder, so
        # that validating never needs a writable $HOME nor creates the work dir early
        env = {**os.environ, "DENO_DIR": os.environ.get("DENO_DIR") or str(Path(tmp) / "deno")}
        proc = subprocess.run(
            [executable, "--format", "json", "--ignoreWarnings", str(view)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
    try:
        report = json.loads(proc.stdout)
        errors = [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
        # an unfetched annexed file is unreadable to the validator: it fails alone, later
        errors = [e for e in errors if not content_missing(bids_dir / str(e.get("location", "")).lstrip("/"))]
    except (json.JSONDecodeError, KeyError):
        raise LumboError(
            f"bids-validator-deno failed on {bids_dir} (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        ) from None
    if errors:
        codes = sorted({e.get("code", "?") for e in errors})
        first = errors[0]
        where = first.get("location", "")
        raise InvalidDatasetError(
            f"BIDS validation of {bids_dir} failed with {len(errors)} error(s) ({', '.join(codes)}); "
            f"first: {first.get('code')} at {where}. Fix the dataset or pass --skip-bids-validation"
        )
    LOGGER.info("bids-validator-deno: %s is valid for %d subject(s)", bids_dir, len(subjects))
