"""Per-subject HTML report ``OUTPUT_DIR/sub-X.html``, assembled from the derivatives.

Like fMRIPrep's reports it is written after the workflow, from what the workflow wrote: for
each image, a sagittal view (mask contour, centerline, crop box) and an axial mosaic (also
saved under ``sub-X/figures/``), the model and centerline method, morphometrics, the
agreement with the manual mask when there is one, and every warning or failure. The page is a
single self-contained file: figures are embedded, no script, no external URL.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from .. import __version__
from ..derivatives import atomic_write_bytes, atomic_write_text, image_output_path, read_json, subject_report_path
from .assets import asset


def _crop_corners(preproc: Path) -> np.ndarray | None:
    if not preproc.is_file():
        return None
    img = nib.load(preproc)
    corners = np.array([[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1) for k in (0, img.shape[2] - 1)])
    return nib.affines.apply_affine(img.affine, corners)


def _centerline(csv: Path) -> np.ndarray | None:
    if not csv.is_file():
        return None
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:] if line]
    return np.array([[float(v) for v in row[1:4]] for row in rows]) if rows else None


def _table(pairs: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)
    return f"<table>{cells}</table>"


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


#: sidecar entries that carry a warning, and which input each one is about
WARNING_FIELDS = {
    "GeometryWarning": "image",
    "FieldOfViewWarning": "image",
    "ManualMaskWarning": "mask",
    "PartialMaskWarning": "mask",
    "MorphometricsWarning": "image",
}


def recorded_warnings(output_dir: Path, anat) -> list[tuple[Path, str]]:
    """The warnings the image's mask and morphometrics sidecars record: ``(file, text)`` pairs,
    the file being the input the warning is about (the image or its manual mask)."""
    found: dict = {}
    for key in ("mask", "morphometrics"):
        path = image_output_path(output_dir, anat, key, extension=".json")
        meta = read_json(path) or {}
        found.update({key: meta[key] for key in WARNING_FIELDS if meta.get(key) and key not in found})
    about = {"image": anat.path, "mask": anat.mask or anat.path}
    return [(about[WARNING_FIELDS[key]], str(text)) for key, text in found.items()]


def _shown(value) -> object:
    return "n/a" if value is None else value


def write_figures(output_dir: Path, anat, res: str, cache_dir: Path | None = None) -> dict[tuple[str, bool], bytes]:
    """Draw the image's sagittal view and axial slices, with and without the overlay, and
    write them where :func:`~.figures.figure_path` says; their PNG bytes by ``(view, overlay)``.

    With ``cache_dir`` (in the work dir), figures whose inputs (the source image, the mask, the
    centerline, the crop, this version of lumbo_bids) have not changed since they were drawn
    are read back instead of drawn again: a rerun with nothing to do redraws nothing."""
    from .figures import VIEWS, axial_mosaic, figure_path, sagittal_figure

    def deriv(key: str) -> Path:
        return image_output_path(output_dir, anat, key, res)

    mask_path = deriv("mask")
    stem = mask_path.name.replace("_mask.nii.gz", "")
    paths = {(view, overlay): figure_path(output_dir, anat.subject, stem, view, overlay)
             for overlay in (True, False) for view in VIEWS}  # fmt: skip
    stamp = key = None
    if cache_dir is not None:
        stamp = Path(cache_dir) / "report_figures" / f"{stem}.json"
        key = _figures_key(anat.path, [mask_path, deriv("centerline_csv"), deriv("preproc")])
        if (figures := _cached_figures(stamp, key, paths)) is not None:
            return figures
    source = nib.load(anat.path)
    data = np.asanyarray(source.dataobj, dtype=np.float32)
    data = data[..., 0] if data.ndim == 4 else data
    mask = np.asanyarray(nib.load(mask_path).dataobj) > 0
    centerline, corners = _centerline(deriv("centerline_csv")), _crop_corners(deriv("preproc"))
    figures = {}
    for overlay in (True, False):
        figures["sagittal", overlay] = sagittal_figure(data, mask, source.affine, centerline, corners, anat.stem, overlay)
        figures["axial", overlay] = axial_mosaic(data, mask, source.affine, overlay=overlay)
    for view_overlay, png in figures.items():
        atomic_write_bytes(paths[view_overlay], png)
    if stamp is not None:
        digests = {str(paths[k]): hashlib.sha256(png).hexdigest() for k, png in figures.items()}
        stamp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, json.dumps({"key": key, "figures": digests}))
    return figures


def _figures_key(source: Path, derivatives: list[Path]) -> str:
    """What the figures are drawn from: the source's identity (path, size, modification time:
    hashing a large image on every rerun would cost what the cache saves), the derivatives'
    content (small files) and this version of lumbo_bids."""
    digest = hashlib.sha256(__version__.encode())
    info = source.stat()
    digest.update(f"{source.resolve()}|{info.st_size}|{info.st_mtime_ns}".encode())
    for path in derivatives:
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-")
    return digest.hexdigest()


def _cached_figures(stamp: Path, key: str, paths: dict) -> dict[tuple[str, bool], bytes] | None:
    """The figures recorded in ``stamp`` when they were drawn from ``key`` and are intact."""
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        if recorded.get("key") != key:
            return None
        figures = {k: path.read_bytes() for k, path in paths.items()}
    except (OSError, ValueError):
        return None
    digests = recorded.get("figures", {})
    if any(digests.get(str(paths[k])) != hashlib.sha256(png).hexdigest() for k, png in figures.items()):
        return None
    return figures


def _facts(output_dir: Path, anat, mask_meta: dict) -> tuple[list[tuple[str, object]], dict]:
    """The image's model, centerline, morphometrics (and agreement) rows; its evaluation."""
    morph = read_json(image_output_path(output_dir, anat, "morphometrics", extension=".json")) or {}
    evaluation = read_json(image_output_path(output_dir, anat, "evaluation", extension=".json")) or {}
    model = mask_meta.get("Model", {})
    facts = [
        ("Model", f"{model.get('Name', '?')} {model.get('Version', '')} ({model.get('Checksum', '')[:19]}…)"),
        ("Centerline", mask_meta.get("CenterlineMethod", "?")),
        ("Threshold", mask_meta.get("Threshold", "?")),
        ("Cord volume (mm³)", _shown(morph.get("CordVolume_mm3"))),
        ("Cord length along the centerline (mm)", _shown(morph.get("CordLength_mm"))),
        ("Mean cross-sectional area (mm²)", _shown(morph.get("MeanCSA_mm2"))),
        ("Most inferior cord point (conus tip if in view), world (mm)", _shown(morph.get("ConusTip_mm"))),
    ]
    if isinstance(mask_meta.get("QCFlags"), list):  # lumbo_bids.qc; README "QC flags"
        facts.append(("QC flags", ", ".join(map(str, mask_meta["QCFlags"])) or "none"))
    if evaluation:
        facts += [
            ("Dice vs manual mask", evaluation.get("Dice")),
            ("HD95 vs manual mask (mm)", evaluation.get("HD95_mm")),
            ("Relative volume difference", evaluation.get("RelativeVolumeDifference")),
        ]
    return facts, evaluation


def image_section(output_dir: Path, anat, res: str, cache_dir: Path | None = None) -> tuple[str, list[str]]:
    """HTML of one image's section (its heading's id: the mask's name without ``_mask.nii.gz``,
    the study page's link target) and its warnings."""
    mask_path = image_output_path(output_dir, anat, "mask", res)
    stem = mask_path.name.replace("_mask.nii.gz", "")
    title = f'<h2 id="{html.escape(stem)}">{html.escape(anat.path.name)}</h2>'
    if not mask_path.is_file():
        return title + '<p class="fail">No segmentation was written for this image (see the failures above).</p>', [
            f"{anat.path.name}: no segmentation"
        ]
    recorded = [f"{path.name}: {text}" for path, text in recorded_warnings(output_dir, anat)]
    warnings = list(recorded)
    mask_meta = read_json(image_output_path(output_dir, anat, "mask", extension=".json")) or {}
    figures = write_figures(output_dir, anat, res, cache_dir)
    if not (np.asanyarray(nib.load(mask_path).dataobj) > 0).any():
        warnings.append(f"{anat.path.name}: the cord mask is empty")
    facts, evaluation = _facts(output_dir, anat, mask_meta)
    if evaluation and (evaluation.get("Dice") or 0) < 0.7:
        warnings.append(f"{anat.path.name}: Dice {evaluation.get('Dice')} against the manual mask")
    if str(mask_meta.get("CenterlineMethod", "")).startswith("automatic"):
        warnings.append(f"{anat.path.name}: no manual mask, centerline found automatically: check the sagittal view")
    notes = "".join(f'<p class="warn">Warning: {html.escape(w)}</p>' for w in recorded)
    body = (
        title
        + notes
        + _table(facts)
        + '<div class="figs">'
        + _img_tag(figures["sagittal", True], f"sagittal view of {anat.path.name}")
        + _img_tag(figures["axial", True], f"axial slices of {anat.path.name}")
        + "</div>"
        + '<p class="legend">Red: cord mask contour. Yellow: centerline. Cyan, dashed: crop box the network saw. '
        + "Each view at the volume's physical aspect; the study page (qc/index.html) shows them without the overlay too.</p>"
    )
    return body, warnings


def write_subject_report(
    output_dir: Path, subject: str, anats: list, res: str, failures: list[str], run_info: dict, cache_dir: Path | None = None
) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` (atomically) and return its path; ``cache_dir``:
    see :func:`write_figures`."""
    sections, warnings = [], []
    for anat in anats:
        section, found = image_section(output_dir, anat, res, cache_dir)
        sections.append(section)
        warnings += found
    summary = _table([(k, v) for k, v in run_info.items()])
    problems = "".join(f'<li class="fail">{html.escape(f)}</li>' for f in failures)
    problems += "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>lumbo_bids: sub-{html.escape(subject)}</title><style>{asset('subject.css')}</style></head><body>"
        f"<h1>lumbo_bids report: sub-{html.escape(subject)}</h1>{summary}"
        f"<h2>Errors and warnings</h2><ul>{problems or '<li>None</li>'}</ul>" + "".join(sections) + "</body></html>\n"
    )
    out = subject_report_path(output_dir, subject)
    atomic_write_text(out, page)
    return out
