"""BIDS-derivatives naming, dataset-level files and atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import __version__
from .errors import OutputError, output_error
from .utils.numbers import dumps_json

CODE_URL = "https://github.com/lumbo-bids/lumbo_bids"
#: ``GeneratedBy[0].Name`` of the dataset_description.json that lumbo_bids writes in OUTPUT_DIR
GENERATOR_NAME = "lumbo_bids"
# BIDS entity order (subset that anatomical sources and our derivatives use)
ENTITY_ORDER = (
    "sub",
    "ses",
    "task",
    "acq",
    "ce",
    "rec",
    "run",
    "echo",
    "part",
    "chunk",
    "space",
    "res",
    "den",
    "label",
    "desc",
)
_PYBIDS_TO_SHORT = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "run": "run",
    "echo": "echo",
    "part": "part",
    "chunk": "chunk",
}
# bids-validator-deno reports folders as NOT_INCLUDED unless a pattern without a trailing
# slash names them (``*/log/`` does not match the folder itself)
# (morphometrics and evaluation tables have no BIDS suffix yet: ignored like the centerline CSV)
BIDSIGNORE = [
    "*.html", "*/figures", "*/log", "group", "qc", "logs", "*_centerline.csv",
    "*_morphometrics.tsv", "*_morphometrics.json", "*_evaluation.tsv", "*_evaluation.json",
]  # fmt: skip


# -- atomic file writing ------------------------------------------------------------------
@contextlib.contextmanager
def _staged(path: Path):
    """A new temporary sibling of ``path`` (``.<name>.XXXX.tmp``) to fill; removed if the block
    fails. An OSError names ``path``, not the temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        yield Path(tmp)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if _concerns(exc, path.parent):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _concerns(exc: OSError, folder: Path) -> bool:
    """Whether ``exc`` is about a file in ``folder``, or about none in particular (a write)."""
    names = [n for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    return not names or any(Path(os.fsdecode(n)).parent == folder for n in names)


def _fill(tmp: Path, data: bytes | None = None, src: Path | None = None) -> None:
    """Write ``data`` (or copy ``src``) into ``tmp``, flushed to disk, readable by all."""
    if src is not None:
        shutil.copyfile(src, tmp)
    with open(tmp, "r+b" if src is not None else "wb") as handle:
        if data is not None:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling then ``os.replace``."""
    path = Path(path)
    with _staged(path) as tmp:
        _fill(tmp, data=data)
        os.replace(tmp, path)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(data: dict) -> bytes:
    """Indented JSON with ``-0.0`` written as ``0.0`` (every sidecar's form)."""
    return (dumps_json(data, indent=2, sort_keys=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically, with ``-0.0`` written as ``0.0``."""
    return atomic_write_bytes(path, json_bytes(data))


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` onto ``dst`` atomically (temporary sibling then rename)."""
    dst = Path(dst)
    with _staged(dst) as tmp:
        _fill(tmp, src=Path(src))
        os.replace(tmp, dst)
    return dst


@contextlib.contextmanager
def _as_output_error(path: Path):
    """An OSError that means the output cannot be created becomes an :class:`OutputError`
    naming ``path`` (the derivative, not its temporary file)."""
    try:
        yield
    except OSError as exc:
        error = output_error(exc, path) if _concerns(exc, path.parent) else None
        if error is None:
            raise
        raise error from None


def write_derivative(src: Path, out: Path, sidecar: Path | None = None, meta: dict | None = None) -> Path:
    """Store ``src`` as ``out`` with its JSON ``sidecar``, atomically as a pair.

    Both are first written in full to temporary siblings; only then is the sidecar renamed
    into place, then the file. Whatever fails (a full disk, a quota, a read-only or forbidden
    folder), the temporary files are removed, a sidecar renamed for a new file that could not
    follow is removed again, so a file never appears half-written nor without its sidecar;
    the error is an :class:`OutputError` (exit 73) naming the derivative.
    """
    out = Path(out)
    with contextlib.ExitStack() as staged:
        with _as_output_error(out):
            image_tmp = staged.enter_context(_staged(out))
            _fill(image_tmp, src=Path(src))
        sidecar_tmp = None
        if sidecar is not None:
            with _as_output_error(sidecar):
                sidecar_tmp = staged.enter_context(_staged(sidecar))
                _fill(sidecar_tmp, data=json_bytes(meta or {}))
        _publish(image_tmp, out, sidecar_tmp, sidecar)
    return out


def _publish(image_tmp: Path, out: Path, sidecar_tmp: Path | None, sidecar: Path | None) -> None:
    """Rename the staged sidecar, then the staged file, into place."""
    new = not out.exists()
    if sidecar_tmp is not None:
        with _as_output_error(sidecar):
            os.replace(sidecar_tmp, sidecar)
    try:
        with _as_output_error(out):
            os.replace(image_tmp, out)
    except BaseException:
        if sidecar is not None and new:
            sidecar.unlink(missing_ok=True)
        raise


# -- naming --------------------------------------------------------------------------------
def source_entities(entities: dict) -> dict[str, str]:
    """Short-form BIDS entities of a source file from its pybids entities."""
    return {short: str(entities[long]) for long, short in _PYBIDS_TO_SHORT.items() if entities.get(long) not in (None, "")}


def derivative_name(entities: dict[str, str], suffix: str, extension: str = ".nii.gz", **extra: str) -> str:
    """Assemble a BIDS file name from short entities + ``extra`` in BIDS order."""
    merged = {**entities, **{k: v for k, v in extra.items() if v is not None}}
    unknown = set(merged) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [f"{key}-{merged[key]}" for key in ENTITY_ORDER if key in merged]
    return "_".join(parts + [suffix]) + extension


def derivative_path(output_dir: Path, entities: dict[str, str], suffix: str, extension: str = ".nii.gz", **extra: str) -> Path:
    """``OUTPUT_DIR/sub-X[/ses-Y]/anat/<name>``."""
    folder = Path(output_dir) / f"sub-{entities['sub']}"
    if "ses" in entities:
        folder = folder / f"ses-{entities['ses']}"
    return folder / "anat" / derivative_name(entities, suffix, extension, **extra)


# -- what the participant level writes for each image: the one table of names ----------------
# "{contrast}" is the image's model contrast (T2star -> T2starw), "{res}" the preprocessed grid's
# resolution label (05mm). The workflow's sinks and the reports both name files from here.
IMAGE_OUTPUTS: dict[str, dict[str, str]] = {
    "mask": {"suffix": "mask", "space": "orig", "label": "SC", "desc": "{contrast}"},
    "probseg": {"suffix": "probseg", "space": "orig", "label": "SC", "desc": "{contrast}"},
    "preproc": {"suffix": "{contrast}", "space": "orig", "res": "{res}", "desc": "preproc"},
    "preproc_mask": {"suffix": "mask", "space": "orig", "res": "{res}", "label": "SC", "desc": "{contrast}"},
    "centerline": {"suffix": "mask", "space": "orig", "res": "{res}", "label": "centerline", "desc": "{contrast}"},
    "centerline_csv": {"suffix": "centerline", "extension": ".csv", "space": "orig", "desc": "{contrast}"},
    "morphometrics": {"suffix": "morphometrics", "extension": ".tsv", "space": "orig", "label": "SC", "desc": "{contrast}"},
    "evaluation": {"suffix": "evaluation", "extension": ".tsv", "space": "orig", "label": "SC", "desc": "{contrast}"},
}


def image_output(key: str, contrast: str, res: str | None = None) -> dict[str, str]:
    """Name fields (suffix, extension, space, res, label, desc) of output ``key`` of an image."""
    fields = {"extension": ".nii.gz", **IMAGE_OUTPUTS[key]}
    if res is None and "{res}" in fields.values():
        raise ValueError(f"output {key!r} needs the resolution label")
    return {name: value.format(contrast=contrast, res=res) for name, value in fields.items()}


def image_output_path(output_dir: Path, anat, key: str, res: str | None = None, extension: str | None = None) -> Path:
    """Where output ``key`` of ``anat`` (a :class:`~lumbo_bids.utils.bids.AnatInput`) is written;
    ``extension=".json"`` gives its sidecar."""
    fields = image_output(key, anat.contrast, res)
    suffix, default_extension = fields.pop("suffix"), fields.pop("extension")
    return derivative_path(output_dir, source_entities(anat.entities), suffix, extension or default_extension, **fields)


def subject_report_path(output_dir: Path, subject: str) -> Path:
    """The subject's QC report, ``OUTPUT_DIR/sub-<subject>.html``."""
    return Path(output_dir) / f"sub-{subject}.html"


def bids_uri(path: Path, dataset_root: Path, dataset: str = "raw") -> str:
    """BIDS URI (``bids:raw:sub-01/anat/...``) of a file of a linked dataset."""
    return f"bids:{dataset}:{Path(path).relative_to(dataset_root).as_posix()}"


# -- dataset-level files -------------------------------------------------------------------
IMAGE_MARKER = Path("/opt/lumbo_bids/VERSION")  # written by containers/install.sh


def container_info() -> dict | None:
    """Describe our own image when we run in it (for ``GeneratedBy``); None natively.

    Only lumbo_bids' images carry :data:`IMAGE_MARKER`: a pip install inside some other
    container is not reported as ours.
    """
    if not IMAGE_MARKER.is_file():
        return None
    tag = os.environ.get("LUMBO_BIDS_IMAGE_TAG", f"lumbo_bids:{__version__}")
    # an image cannot know its own digest: the one who runs it can pass it in
    # (docker run -e LUMBO_BIDS_IMAGE_DIGEST=$(docker inspect -f '{{.Id}}' IMAGE), or the SIF's sha256)
    digest = {"Digest": os.environ["LUMBO_BIDS_IMAGE_DIGEST"]} if os.environ.get("LUMBO_BIDS_IMAGE_DIGEST") else {}
    image = os.environ.get("SINGULARITY_CONTAINER") or os.environ.get("APPTAINER_CONTAINER")
    if image:
        return {"Type": "singularity", "Tag": tag, "URI": Path(image).as_uri() if Path(image).is_absolute() else image, **digest}
    return {"Type": "docker", "Tag": tag, **digest}


def source_dataset(bids_dir: Path, raw_description: dict) -> dict:
    """The input dataset as ``SourceDatasets`` names it: where it is, its DOI and version when
    its ``dataset_description.json`` gives them (``DatasetDOI``; OpenNeuro's ``doi:`` prefix kept)."""
    entry = {"URL": bids_dir.as_uri()}
    if isinstance(doi := raw_description.get("DatasetDOI"), str) and doi.strip():
        entry["DOI"] = doi.strip()
    for key in ("Version", "DatasetVersion"):
        if isinstance(version := raw_description.get(key), (str, int, float)) and str(version).strip():
            entry["Version"] = str(version).strip()
            break
    return entry


def dataset_description(bids_dir: Path, raw_description: dict) -> dict:
    """The derivative dataset's ``dataset_description.json`` content (deterministic)."""
    generated_by = {"Name": GENERATOR_NAME, "Version": __version__, "CodeURL": CODE_URL}
    container = container_info()
    if container:
        generated_by["Container"] = container
    description = {
        "Name": f"lumbo_bids spinal cord segmentation of {raw_description.get('Name', bids_dir.name)}",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [source_dataset(bids_dir, raw_description)],
        "DatasetLinks": {"raw": bids_dir.as_uri()},
        "License": raw_description.get("License", "See the source dataset"),
        "Authors": dataset_authors(raw_description),
        "HowToAcknowledge": "Please cite lumbo_bids and the Spinal Cord Toolbox's deepseg_sc (Gros et al. 2019, NeuroImage 184:901-915).",
    }
    return description


def foreign_dataset(output_dir: Path) -> str | None:
    """Why the existing ``output_dir`` holds a dataset that lumbo_bids did not write (its
    ``dataset_description.json`` names another generator, none, or cannot be read), or None
    when it has no ``dataset_description.json`` or lumbo_bids wrote it."""
    path = Path(output_dir) / "dataset_description.json"
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"its {path.name} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    except json.JSONDecodeError:
        return f"its {path.name} is not valid JSON"
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    first = generated[0] if isinstance(generated, list) and generated else None
    name = first.get("Name") if isinstance(first, dict) else None
    if name == GENERATOR_NAME:
        return None
    if name is None:
        kind = description.get("DatasetType", "raw") if isinstance(description, dict) else "raw"
        return f"its {path.name} describes a {kind} dataset that names no GeneratedBy"
    return f"its {path.name} was generated by {name!r}"


def dataset_authors(raw_description: dict) -> list[str]:
    """The software that made the derivatives, then the source dataset's authors."""
    raw = raw_description.get("Authors")
    raw = [str(a) for a in raw] if isinstance(raw, list) else []
    return list(dict.fromkeys(["lumbo_bids contributors (software)", *raw]))


def dataset_readme(raw_description: dict) -> str:
    """The derivative dataset's README (deterministic, as the other dataset-level files)."""
    name = raw_description.get("Name", "the source dataset")
    return (
        "# lumbo_bids derivatives\n\n"
        f"Spinal cord segmentations of *{name}* made by lumbo_bids {__version__} ({CODE_URL}), "
        "following the Spinal Cord Toolbox's deepseg_sc: per subject, under `sub-XX/anat/`, the cord "
        "mask on each source image's native grid (`_mask`), the preprocessed image, the centerline, "
        "morphometrics and, where a manual mask exists, its evaluation; `sub-XX.html` is the QC "
        "report and `sub-XX/log/` holds each run's configuration and crash files. Every sidecar lists "
        "its `Sources` as BIDS URIs into the source dataset (`DatasetLinks` in "
        "dataset_description.json) and names the model and its checksum.\n"
    )


def write_dataset_files(output_dir: Path, bids_dir: Path, raw_description: dict) -> None:
    """Write ``dataset_description.json``, ``README.md`` and ``.bidsignore`` atomically and idempotently.

    Several participant jobs may share one output folder: the content is deterministic, so
    concurrent writers produce the same bytes and ``os.replace`` keeps the file whole.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        desc_path = output_dir / "dataset_description.json"
        content = dataset_description(bids_dir, raw_description)
        if not desc_path.exists() or read_json(desc_path) != content:
            atomic_write_json(desc_path, content)
        readme = output_dir / "README.md"
        if not readme.exists():  # never replaces a README someone wrote
            atomic_write_text(readme, dataset_readme(raw_description))
        ignore_path = output_dir / ".bidsignore"
        existing = ignore_path.read_text(encoding="utf-8").splitlines() if ignore_path.exists() else []
        wanted = existing + [line for line in BIDSIGNORE if line not in existing]
        if wanted != existing:
            atomic_write_text(ignore_path, "\n".join(wanted) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write to OUTPUT_DIR {output_dir}: {exc.strerror}") from None


def read_json(path: Path) -> dict | None:
    """The JSON content of ``path``, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
