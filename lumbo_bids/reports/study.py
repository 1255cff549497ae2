"""The study QC page ``OUTPUT_DIR/qc/index.html``: every image of every subject in one place.

Assembled from the derivatives found in OUTPUT_DIR (whichever runs wrote them): each image's
mask sidecar (and its ``QCFlags``/``QCMeasures`` when the flags were computed), evaluation and
morphometrics sidecars, and the figures the subject reports drew under ``sub-*/figures/``
(:func:`~.figures.figure_path`), linked relatively so that the page stays small for 400
subjects. ``group/qc_flags.tsv``, ``group/annotate_next.tsv`` and ``group/rounds.tsv`` (the study
loop's rounds: each image's label source and how much its mask changed from the last round) are
shown when present.

The page is one file with its script and style inline (``lumbo_bids/data/reports/``): no
network, nothing written but the browser's localStorage, so it works offline and from a
read-only folder. A sortable table, keyboard navigation, the overlay on/off, and a pass/fail/note
rating per image, exported as the TSV that :mod:`lumbo_bids.ratings` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from .. import __version__
from ..derivatives import atomic_write_text, derivative_name, image_output, read_json, subject_report_path
from ..qc import FLAGS
from .assets import asset
from .figures import VIEWS, figure_path

MASK_SIDECARS = "sub-*/**/anat/*_space-orig_label-SC_desc-*_mask.json"
#: the table's metrics: (key, column title, derivative, sidecar field)
METRICS = (
    ("dice", "Dice", "evaluation", "Dice"),
    ("volume", "volume (mm³)", "morphometrics", "CordVolume_mm3"),
    ("length", "length (mm)", "morphometrics", "CordLength_mm"),
    ("csa", "mean CSA (mm²)", "morphometrics", "MeanCSA_mm2"),
)
_ENTITY = re.compile(r"^([a-zA-Z]+)-(.+)$")


def study_page_path(output_dir: Path) -> Path:
    """``OUTPUT_DIR/qc/index.html``."""
    return Path(output_dir) / "qc" / "index.html"


@dataclass
class StudyImage:
    """One segmented image as the page shows it."""

    image: str  # the source file's name without .nii(.gz): the ratings' key
    subject: str
    stem: str  # the mask's name without _mask.nii.gz: the figures' and the report section's name
    source: Path | None = None  # the source image, when the dataset's link says where
    values: dict = field(default_factory=dict)  # METRICS key -> number or None
    flags: list[str] | None = None  # None: the flags were not computed
    measures: dict = field(default_factory=dict)
    centerline: str = ""
    figures: dict = field(default_factory=dict)  # (view, overlay) -> existing PNG
    report: Path | None = None
    annotate: dict | None = None  # its row of group/annotate_next.tsv
    model: str = ""  # checksum of the model that made the mask (exported with a rating: lumbo_bids.accepted)
    rounds: list = field(default_factory=list)  # its rows of group/rounds.tsv, oldest first

    @property
    def last_round(self) -> dict:
        return self.rounds[-1] if self.rounds else {}


def _sibling(mask_json: Path, key: str) -> Path:
    """The sidecar of output ``key`` (derivatives.IMAGE_OUTPUTS) of the image whose mask
    sidecar is ``mask_json``."""
    stem = mask_json.name.removesuffix("_mask.json")
    entities = dict(m.groups() for part in stem.split("_") if (m := _ENTITY.match(part)))
    source = {k: v for k, v in entities.items() if k not in ("space", "res", "label", "desc")}
    fields = image_output(key, entities.get("desc", ""))
    suffix, _ = fields.pop("suffix"), fields.pop("extension")
    return mask_json.with_name(derivative_name(source, suffix, ".json", **fields))


def _raw_root(output_dir: Path) -> Path | None:
    """The source dataset's folder, from ``dataset_description.json``'s ``DatasetLinks``."""
    link = ((read_json(Path(output_dir) / "dataset_description.json") or {}).get("DatasetLinks") or {}).get("raw")
    parsed = urlparse(str(link or ""))
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _source(meta: dict, raw_root: Path | None) -> tuple[str | None, Path | None]:
    """The source image's name (without .nii(.gz)) and path, from the sidecar's ``Sources``."""
    for uri in meta.get("Sources") or []:
        if isinstance(uri, str) and uri.startswith("bids:raw:"):
            relative = uri.removeprefix("bids:raw:")
            name = Path(relative).name.split(".nii")[0]
            return name, (raw_root / relative if raw_root is not None else None)
    return None, None


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _flags(value) -> list[str] | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [value] if isinstance(value, str) and value else None


def collect_images(output_dir: Path) -> list[StudyImage]:
    """Every image that has a mask sidecar in OUTPUT_DIR, most flags first, then by name."""
    output_dir = Path(output_dir)
    raw_root = _raw_root(output_dir)
    images = []
    for mask_json in sorted(output_dir.glob(MASK_SIDECARS)):
        meta = read_json(mask_json) or {}
        subject = mask_json.relative_to(output_dir).parts[0].removeprefix("sub-")
        stem = mask_json.name.removesuffix("_mask.json")
        name, source = _source(meta, raw_root)
        sidecars = {key: read_json(_sibling(mask_json, key)) or {} for key in ("evaluation", "morphometrics")}
        figures = {
            (view, overlay): figure_path(output_dir, subject, stem, view, overlay) for view in VIEWS for overlay in (True, False)
        }
        report = subject_report_path(output_dir, subject)
        images.append(
            StudyImage(
                image=name or stem, subject=subject, stem=stem, source=source,
                values={key: _number(sidecars[kind].get(entry)) for key, _, kind, entry in METRICS},
                flags=_flags(meta.get("QCFlags")), measures=meta.get("QCMeasures") if isinstance(meta.get("QCMeasures"), dict) else {},
                centerline=str(meta.get("CenterlineMethod", "")),
                model=str((meta.get("Model") if isinstance(meta.get("Model"), dict) else {}).get("Checksum", "")),
                figures={key: path for key, path in figures.items() if path.is_file()},
                report=report if report.is_file() else None,
            )
        )  # fmt: skip
    images.sort(key=lambda i: (-len(i.flags or []), i.subject, i.stem))
    return images


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a TSV as dicts (lower-case column names); [] when missing or unreadable."""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return []
    if not lines:
        return []
    header = [name.strip().lower() for name in lines[0].lstrip("\ufeff").split("\t")]
    return [dict(zip(header, (cell.strip() for cell in line.split("\t")))) for line in lines[1:]]


def _find(images: list[StudyImage], name: str) -> StudyImage | None:
    """The image a table's ``image`` cell names: the source's name, the mask's stem, or a file name."""
    name = Path(name).name.split(".nii")[0].removesuffix("_mask")
    return next((i for i in images if name in (i.image, i.stem)), None)


def merge_group_tables(output_dir: Path, images: list[StudyImage]) -> list[dict[str, str]]:
    """Flags from ``group/qc_flags.tsv`` (``image`` and ``flags`` columns, names separated by
    commas) for the images whose sidecar has none; the rows of ``group/annotate_next.tsv``
    (``rank image subject score reason``) and of ``group/rounds.tsv`` (``round image rating label
    dice_vs_last_round``), each attached to its image when it is on the page."""
    group = Path(output_dir) / "group"
    for row in read_table(group / "qc_flags.tsv"):
        image = _find(images, row.get("image", ""))
        if image is not None and image.flags is None and "flags" in row:
            image.flags = [f for f in re.split(r"[,;\s]+", row["flags"]) if f and f.lower() not in ("none", "n/a")]
    annotate = read_table(group / "annotate_next.tsv")
    for row in annotate:
        image = _find(images, row.get("image", ""))
        if image is not None:
            image.annotate = row
    for row in read_table(group / "rounds.tsv"):
        image = _find(images, row.get("image", ""))
        if image is not None:
            image.rounds.append(row)
    images.sort(key=lambda i: (-len(i.flags or []), i.subject, i.stem))
    return annotate


def _href(path: Path, page_dir: Path, anchor: str = "") -> str:
    link = quote(os.path.relpath(path, page_dir).replace(os.sep, "/"))
    return html.escape(link + (f"#{quote(anchor)}" if anchor else ""))


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    return struct.unpack(">II", head[16:24]) if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 24 else None


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_DIGITS = {"dice": 3, "volume": 0, "length": 1, "csa": 1}
_esc = html.escape


def _flags_html(flags: list[str]) -> str:
    """The flags' names, each with its one-line explanation (``lumbo_bids.qc.FLAGS``) on hovering."""
    explain = {flag.name: flag.explanation for flag in FLAGS}
    return " ".join(f'<span class="flag" title="{_esc(explain.get(f, ""))}">{_esc(f)}</span>' for f in flags)


def _row(image: StudyImage) -> str:
    data = {f"data-{key}": "" if image.values[key] is None else repr(image.values[key]) for key, *_ in METRICS}
    data.update({"data-image": image.image, "data-subject": image.subject, "data-target": f"img-{image.stem}"})
    data["data-nflags"] = "" if image.flags is None else str(len(image.flags))
    data["data-rank"] = (image.annotate or {}).get("rank", "")
    data["data-label"] = image.last_round.get("label") or ""
    data["data-change"] = _numeric_text(image.last_round.get("dice_vs_last_round"))
    attrs = " ".join(f'{k}="{_esc(v)}"' for k, v in data.items())
    flags = "n/a" if image.flags is None else (_flags_html(image.flags) or "0")
    cells = [f"<td>{_esc(image.image)}</td>", f"<td>{_esc(image.subject)}</td>"]
    cells += [f'<td class="num">{_fmt(image.values[key], _DIGITS[key])}</td>' for key, *_ in METRICS]
    cells += [f'<td class="nflags-{len(image.flags or [])}">{flags}</td>', f'<td class="num">{_esc(data["data-rank"])}</td>']
    cells += [f"<td>{_esc(data['data-label'])}</td>", f'<td class="num">{_esc(data["data-change"])}</td>']
    return f'<tr id="row-{_esc(image.stem)}" {attrs}>' + "".join(cells) + '<td class="rating">unrated</td></tr>'


def _figure(image: StudyImage, view: str, page_dir: Path) -> str:
    """The view with and without its overlay (one shown at a time), linked to the full-size PNG.
    The figure has its size before the images load: their aspect, at most their own width, the
    page's, and the window's height less the header's and the card's text (``--chrome``, set by
    the script)."""
    found = {overlay: image.figures[view, overlay] for overlay in (True, False) if (view, overlay) in image.figures}
    if not found:
        return f'<p class="missing">no {view} figure (the subject report draws it)</p>'
    size = _png_size(next(iter(found.values())))
    dims, style = "", ""
    if size:
        dims = f' width="{size[0]}" height="{size[1]}"'
        style = f' style="width:min(100%, {size[0]}px, calc((100vh - var(--chrome, 12em)) * {size[0] / size[1]:.4f}))"'
    tags = []
    for overlay, path in found.items():
        alt = f"{view} view of {image.image}{'' if overlay else ' without overlay'}"
        kind = "only" if len(found) == 1 else "ov" if overlay else "plain"  # one figure alone is always shown
        tags.append(f'<img class="{kind}" loading="lazy" src="{_href(path, page_dir)}"{dims} alt="{_esc(alt)}">')
    link = _href(found.get(True) or found[False], page_dir)
    return f'<figure{style}><a href="{link}" target="_blank">{"".join(tags)}</a><figcaption>{view}</figcaption></figure>'


def _numeric_text(text: str | None) -> str:
    """A number of a table as it is, or "" (``n/a``, missing)."""
    try:
        float(text)
    except (TypeError, ValueError):
        return ""
    return text


def _rounds_html(rows: list[dict]) -> str:
    """The image's rounds of the study loop: rating, label source, Dice against the last round."""
    if not rows:
        return ""
    last = rows[-1]
    history = " → ".join(_esc(r.get("dice_vs_last_round", "n/a")) for r in rows)
    table = "".join(
        "<tr>" + "".join(f"<td>{_esc(r.get(k, ''))}</td>" for k in ("round", "rating", "label", "dice_vs_last_round")) + "</tr>"
        for r in rows
    )
    return (
        f"<span>round {_esc(last.get('round', '?'))}: label <b>{_esc(last.get('label', 'none'))}</b>, "
        f"rated {_esc(last.get('rating', 'unrated'))}, Dice vs last round <b>{_esc(last.get('dice_vs_last_round', 'n/a'))}</b></span>"
        f"<details><summary>rounds ({len(rows)}): {history}</summary><table><thead><tr><th>round</th><th>rating</th>"
        f"<th>label</th><th>Dice vs last round</th></tr></thead><tbody>{table}</tbody></table></details>"
    )


def _card(image: StudyImage, order: int, page_dir: Path) -> str:
    facts = [f"<span>{title}: <b>{_fmt(image.values[key], _DIGITS[key])}</b></span>" for key, title, *_ in METRICS]
    facts.append(f"<span>centerline: {_esc(image.centerline or '?')}</span>")
    if image.flags is not None:
        facts.append("<span>flags: " + (_flags_html(image.flags) or "none") + "</span>")
    if image.measures:
        rows = "".join(f"<tr><td>{_esc(str(k))}</td><td>{_esc(str(v))}</td></tr>" for k, v in image.measures.items())
        facts.append(f"<details><summary>QC measures ({len(image.measures)})</summary><table>{rows}</table></details>")
    facts.append(_rounds_html(image.rounds))
    rank = f' <span class="rank">annotate next #{_esc(image.annotate.get("rank", "?"))}</span>' if image.annotate else ""
    links = []
    if image.report is not None:
        links.append(f'<a href="{_href(image.report, page_dir, image.stem)}">subject report</a>')
    if image.source is not None:
        links.append(f'source image: <a href="{_esc(image.source.as_uri())}">{_esc(str(image.source))}</a>')
    return (
        f'<section class="card" id="img-{_esc(image.stem)}" data-image="{_esc(image.image)}" data-model="{_esc(image.model)}" data-order="{order}">'
        f"<h2>{_esc(image.image)}{rank}</h2>"
        f'<div class="facts">{"".join(facts)}</div>'
        '<div class="rating"><button class="pass" type="button">pass (p)</button>'
        '<button class="fail" type="button">fail (f)</button> <b class="state">unrated</b>'
        '<textarea class="note" rows="1" placeholder="note (n to type, Esc to leave)"></textarea></div>'
        f'<div class="figs">{"".join(_figure(image, view, page_dir) for view in VIEWS)}</div>'
        f'<p class="links">{" · ".join(links)}</p></section>'
    )


def _annotate_section(rows: list[dict[str, str]], images: list[StudyImage]) -> str:
    if not rows:
        return ""
    lines = []
    for row in rows:
        image = _find(images, row.get("image", ""))
        name = _esc(row.get("image", ""))
        link = f'<a href="#img-{_esc(image.stem)}">{name}</a>' if image else name
        if image and image.source:
            source = f'<a href="{_esc(image.source.as_uri())}">{_esc(str(image.source))}</a>'
        else:  # not on the page: the table's own source column (relative to BIDS_DIR), if any
            source = _esc(row.get("source", "")) if row.get("source", "n/a") != "n/a" else ""
        cells = [_esc(row.get("rank", "")), link, *(_esc(row.get(key, "")) for key in ("subject", "score", "reason"))]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in [*cells, source]) + "</tr>")
    head = "".join(f"<th>{t}</th>" for t in ("rank", "image", "subject", "score", "reason", "source image"))
    return (
        "<h2>Annotate next (group/annotate_next.tsv)</h2><p>Draw masks on these first: they help the model most.</p>"
        f'<table class="annotate"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
    )


def render_study_page(images: list[StudyImage], annotate: list[dict[str, str]], dataset: str, page_dir: Path) -> str:
    """The page's HTML; links are relative to ``page_dir`` (where the page is written)."""
    columns = [("image", "image", "text"), ("subject", "subject", "text")]
    columns += [(key, title, "number") for key, title, *_ in METRICS]
    columns += [("nflags", "flags", "number"), ("rank", "annotate rank", "number")]
    columns += [("label", "label (last round)", "text"), ("change", "Dice vs last round", "number"), ("rating", "rating", "text")]
    head = "".join(f'<th data-key="{k}" data-type="{t}">{_esc(title)}</th>' for k, title, t in columns)
    subjects = len({i.subject for i in images})
    keys = "<kbd>j</kbd>/<kbd>↓</kbd> next · <kbd>k</kbd>/<kbd>↑</kbd> previous · <kbd>o</kbd> overlay · "
    keys += "<kbd>p</kbd> pass · <kbd>f</kbd> fail · <kbd>u</kbd> unrated · <kbd>n</kbd> note (<kbd>Esc</kbd> to leave it)"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>lumbo_bids study QC: {_esc(dataset)}</title><style>{asset('study.css')}</style></head>"
        f'<body data-dataset="{_esc(dataset)}"><header><h1>Study QC: {_esc(dataset)}</h1><div class="bar">'
        f"<span>{len(images)} image(s) of {subjects} subject(s) · lumbo_bids {__version__}</span>"
        '<span id="position"></span><label><input type="checkbox" id="overlay" checked> overlay</label>'
        '<button id="export" type="button">Export ratings</button><span id="counts"></span>'
        '<span id="storage-warning" hidden>ratings cannot be stored in this browser: export them before closing</span>'
        f"<span>{keys}</span></div></header>"
        '<div class="wrap"><p>Ratings are kept in this browser (per dataset and image) until exported; '
        "<code>group --qc-ratings FILE</code> leaves the images rated <i>fail</i> out of fine-tuning. "
        "Click a column to sort; figures are those of <code>sub-*/figures/</code> "
        "(red: mask contour, yellow: centerline, cyan: crop box).</p>"
        + _annotate_section(annotate, images)
        + f'<table id="images"><thead><tr>{head}</tr></thead><tbody>{"".join(_row(i) for i in images)}</tbody></table>'
        + f'<main id="cards">{"".join(_card(image, n, page_dir) for n, image in enumerate(images))}</main></div>'
        + f"<script>{asset('study.js')}</script></body></html>\n"
    )


@contextlib.contextmanager
def _page_lock(folder: Path):
    """One writer of the page at a time among the jobs that share OUTPUT_DIR: each reads the
    derivatives after the previous one wrote its page, so the last page shows them all."""
    try:
        handle = open(folder / ".index.html.lock", "a")
    except OSError:
        yield
        return
    with handle:
        with contextlib.suppress(OSError):  # a file system without locks: still atomic, maybe not the newest
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_study_page(output_dir: Path) -> Path:
    """Write ``OUTPUT_DIR/qc/index.html`` (atomically) from what OUTPUT_DIR holds; its path."""
    output_dir = Path(output_dir)
    page = study_page_path(output_dir)
    page.parent.mkdir(parents=True, exist_ok=True)
    with _page_lock(page.parent):
        images = collect_images(output_dir)
        annotate = merge_group_tables(output_dir, images)
        dataset = (read_json(output_dir / "dataset_description.json") or {}).get("Name") or output_dir.name
        return atomic_write_text(page, render_study_page(images, annotate, str(dataset), page.parent))
