"""The study QC page (``OUTPUT_DIR/qc/index.html``) and the ratings TSV it exports.

A small fake OUTPUT_DIR with known numbers: four images of four subjects (one with a session),
drawn by the subject report from synthetic volumes of known physical size, flags in a sidecar,
in ``group/qc_flags.tsv`` or nowhere, and an ``annotate_next.tsv``. The browser test opens the
page from a read-only copy in headless Chromium (skipped without chromium and playwright).
"""

from __future__ import annotations

import contextlib
import html
import json
import multiprocessing
import os
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lumbo_bids.derivatives import image_output_path
from lumbo_bids.qc import FLAGS
from lumbo_bids.ratings import read_rated_models, read_ratings
from lumbo_bids.reports.figures import MIN_SHORT_PX
from lumbo_bids.reports.group import write_group_summaries
from lumbo_bids.reports.study import collect_images, study_page_path, write_study_page
from lumbo_bids.reports.subject import write_subject_report
from lumbo_bids.utils.bids import AnatInput

DATASET = "fake study"
#: subject, session, suffix, volume shape, voxel size (mm), QCFlags (None: no field), Dice, (volume, length, CSA)
CASES = [
    ("01", None, "T2w", (40, 141, 16), (1.0, 1.0, 1.0), ["csa_out_of_range", "mask_breaks"], 0.91, (1200.0, 15.0, 80.0)),
    ("02", "1", "T1w", (49, 54, 9), (0.5, 0.5, 7.5), None, None, (900.0, 60.0, 60.0)),
    ("03", None, "T2star", (30, 40, 50), (1.0, 1.0, 1.0), None, 0.75, (1500.0, 50.0, 65.5)),
]
STEM = {
    "01": "sub-01_space-orig_label-SC_desc-T2w",
    "02": "sub-02_ses-1_space-orig_label-SC_desc-T1w",
    "03": "sub-03_space-orig_label-SC_desc-T2starw",
    "04": "sub-04_space-orig_label-SC_desc-T2w",
}
IMAGE = {"01": "sub-01_T2w", "02": "sub-02_ses-1_T1w", "03": "sub-03_T2star", "04": "sub-04_T2w"}


def _anat(raw: Path, subject: str, session: str | None, suffix: str, shape, zooms) -> AnatInput:
    folder = raw / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{IMAGE[subject]}.nii.gz"
    data = np.random.default_rng(int(subject)).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    entities = {"subject": subject, "suffix": suffix, **({"session": session} if session else {})}
    return AnatInput(path, subject, session, suffix, None, entities)


def _derivatives(out: Path, anat: AnatInput, flags, dice, morph) -> None:
    """The mask (a cord tube in the middle), its sidecar and the evaluation/morphometrics sidecars."""
    source = nib.load(anat.path)
    mask = np.zeros(source.shape, np.uint8)
    cx, cy = source.shape[0] // 2, source.shape[1] // 2
    mask[cx - 3 : cx + 3, cy - 4 : cy + 4, :] = 1
    path = image_output_path(out, anat, "mask")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask, source.affine), path)
    uri = f"bids:raw:{anat.path.relative_to(out.parent / 'raw').as_posix()}"
    meta = {"Sources": [uri], "CenterlineMethod": "manual mask", "Model": {"Name": "m", "Version": "1", "Checksum": "x"}}
    if flags is not None:
        meta |= {"QCFlags": flags, "QCMeasures": {"csa_max_mm2": 131.5}}
    image_output_path(out, anat, "mask", extension=".json").write_text(json.dumps(meta))
    names = ("CordVolume_mm3", "CordLength_mm", "MeanCSA_mm2")
    image_output_path(out, anat, "morphometrics", extension=".json").write_text(json.dumps(dict(zip(names, morph))))
    if dice is not None:
        image_output_path(out, anat, "evaluation", extension=".json").write_text(json.dumps({"Dice": dice}))


def build_output(root: Path) -> Path:
    out, raw = root / "out", root / "raw"
    out.mkdir(parents=True)
    (out / "dataset_description.json").write_text(json.dumps({"Name": DATASET, "DatasetLinks": {"raw": raw.as_uri()}}))
    for subject, session, suffix, shape, zooms, flags, dice, morph in CASES:
        anat = _anat(raw, subject, session, suffix, shape, zooms)
        _derivatives(out, anat, flags, dice, morph)
        write_subject_report(out, subject, [anat], "05mm", [], {"Run": "test"})
    # sub-04: a mask sidecar but no figure (its report was not written), flags computed: none
    anat4 = out / "sub-04" / "anat" / f"{STEM['04']}_mask.json"
    anat4.parent.mkdir(parents=True)
    anat4.write_text(json.dumps({"Sources": ["bids:raw:sub-04/anat/sub-04_T2w.nii.gz"], "QCFlags": []}))
    group = out / "group"
    group.mkdir()
    (group / "qc_flags.tsv").write_text(
        "subject\tsession\timage\tmask\tn_flags\tflags\n"
        f"03\tn/a\tsub-03_T2star\tsub-03/anat/{STEM['03']}_mask.nii.gz\t1\tlow_margin_in_mask\n"
        f"01\tn/a\tsub-01_T2w\tsub-01/anat/{STEM['01']}_mask.nii.gz\t1\tsomething_else\n"  # the sidecar wins
    )
    (group / "annotate_next.tsv").write_text(
        "rank\timage\tsubject\tscore\treason\tsource\n1\tsub-02_ses-1_T1w\t02\t0.83\tuncertain margin\tn/a\n"
        "2\tsub-04_T2w\t04\t0.5\tunlike the masked images\tn/a\n"
        "3\tsub-99_T2w\t99\t0.1\tnot segmented yet\tsub-99/anat/sub-99_T2w.nii.gz\n"
    )
    (group / "rounds.tsv").write_text(  # two rounds of the study loop (lumbo_bids.reports.rounds)
        "round\timage\trating\tlabel\tdice_vs_last_round\n"
        "1\tsub-01_T2w\tunrated\tmanual\tn/a\n1\tsub-03_T2star\tpass\taccepted automatic mask\tn/a\n"
        "2\tsub-01_T2w\tunrated\tmanual\t0.9712\n2\tsub-03_T2star\tpass\taccepted automatic mask\t0.8804\n"
        "2\tsub-99_T2w\tfail\tnone\tn/a\n"  # not on the page
    )
    write_study_page(out)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return build_output(tmp_path_factory.mktemp("study"))


class _Page(HTMLParser):
    """The table rows, cards, images and links of the page."""

    def __init__(self):
        super().__init__()
        self.rows, self.cards, self.images, self.links, self.tags = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and attrs.get("id", "").startswith("row-"):
            self.rows.append(attrs)
        if tag == "section" and "card" in attrs.get("class", ""):
            self.cards.append(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "a":
            self.links.append(attrs["href"])


def _parse(out: Path) -> tuple[_Page, str]:
    text = study_page_path(out).read_text()
    page = _Page()
    page.feed(text)
    return page, text


def test_collect_images_reads_every_sidecar(study):
    images = {i.subject: i for i in collect_images(study)}
    assert set(images) == {"01", "02", "03", "04"}
    assert {s: i.image for s, i in images.items()} == IMAGE
    assert {s: i.stem for s, i in images.items()} == STEM
    assert images["01"].values == {"dice": 0.91, "volume": 1200.0, "length": 15.0, "csa": 80.0}
    assert images["02"].values["dice"] is None and images["02"].flags is None
    assert images["01"].flags == ["csa_out_of_range", "mask_breaks"] and images["01"].measures == {"csa_max_mm2": 131.5}
    assert images["01"].source == study.parent / "raw" / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    assert images["02"].source == study.parent / "raw" / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz"
    assert len(images["01"].figures) == 4 and images["04"].figures == {} and images["04"].report is None


def test_page_lists_every_image_with_its_sort_values(study):
    page, text = _parse(study)
    rows = {r["data-subject"]: r for r in page.rows}
    # most flags first (sub-03's from group/qc_flags.tsv), then by subject
    assert [r["data-subject"] for r in page.rows] == ["01", "03", "02", "04"]
    assert [c["id"] for c in page.cards] == [f"img-{STEM[s]}" for s in ("01", "03", "02", "04")]
    assert {s: r["data-nflags"] for s, r in rows.items()} == {"01": "2", "03": "1", "02": "", "04": "0"}
    assert rows["01"]["data-dice"] == "0.91" and rows["02"]["data-dice"] == "" and rows["03"]["data-csa"] == "65.5"
    assert rows["01"]["data-volume"] == "1200.0" and rows["02"]["data-length"] == "60.0"
    assert {s: r["data-image"] for s, r in rows.items()} == IMAGE
    assert {s: r["data-rank"] for s, r in rows.items()} == {"01": "", "02": "1", "03": "", "04": "2"}
    # the study loop's last round: label source and Dice against the round before (sortable)
    assert {s: r["data-label"] for s, r in rows.items()} == {"01": "manual", "02": "", "03": "accepted automatic mask", "04": ""}
    assert {s: r["data-change"] for s, r in rows.items()} == {"01": "0.9712", "02": "", "03": "0.8804", "04": ""}
    assert "round 2: label <b>accepted automatic mask</b>, rated pass, Dice vs last round <b>0.8804</b>" in text
    assert "<summary>rounds (2): n/a → 0.9712</summary>" in text and "sub-99_T2w\tfail" not in text
    assert "something_else" not in text and "low_margin_in_mask" in text  # the sidecar wins over the table
    explanation = html.escape(next(f.explanation for f in FLAGS if f.name == "mask_breaks"))
    assert f'<span class="flag" title="{explanation}">mask_breaks</span>' in text  # explained on hovering
    assert "<summary>QC measures (1)</summary>" in text and "<td>csa_max_mm2</td><td>131.5</td>" in text
    assert text.count("no sagittal figure") == 1 and text.count("no axial figure") == 1  # sub-04
    assert f'data-dataset="{DATASET}"' in text


def test_page_is_self_contained(study):
    page, text = _parse(study)
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"\burl\(|@import|<link|<iframe", text)  # CSS url(), imports, linked files
    assert not [a for tag, a in page.tags if tag == "script" and "src" in a]
    assert "<script>" in text and "<style>" in text  # inline
    qc = study_page_path(study).parent
    for img in page.images:  # relative links to files inside OUTPUT_DIR
        target = (qc / img["src"]).resolve()
        assert not img["src"].startswith(("/", "file:")) and target.is_file() and study.resolve() in target.parents
    assert len(page.images) == 3 * 4  # sub-01..03: sagittal and axial, with and without the overlay
    for href in page.links:
        assert href.startswith(("#", "../", "file:///")), href


def test_figures_have_the_volume_physical_aspect(study):
    page, _ = _parse(study)
    sagittal = {img["src"].split("/")[1]: img for img in page.images if img["src"].endswith("_sagittal.png")}
    short = sagittal["sub-01"]  # 141 mm x 16 mm of 1 mm voxels: 80 mm around the cord by 16 mm, 5:1
    assert (int(short["width"]), int(short["height"])) == (5 * MIN_SHORT_PX, MIN_SHORT_PX)
    thick = sagittal["sub-02"]  # 54 x 0.5 mm wide, 9 x 7.5 mm high
    assert int(thick["height"]) / int(thick["width"]) == pytest.approx(67.5 / 27, rel=0.01)
    assert min(int(thick["width"]), int(thick["height"])) >= MIN_SHORT_PX
    plain = next(img for img in page.images if img["src"].endswith("sub-01/figures/" + STEM["01"] + "_sagittal_plain.png"))
    assert (plain["width"], plain["height"]) == (short["width"], short["height"])


def test_links_to_reports_sources_and_annotate_next(study):
    page, text = _parse(study)
    assert f"../sub-01.html#{STEM['01']}" in page.links
    report = (study / "sub-01.html").read_text()
    assert f'id="{STEM["01"]}"' in report  # the report's section has that anchor
    assert "<th>QC flags</th><td>csa_out_of_range, mask_breaks</td>" in report
    assert "<th>QC flags</th>" not in (study / "sub-02.html").read_text()  # not computed: not shown
    assert (study.parent / "raw" / "sub-01" / "anat" / "sub-01_T2w.nii.gz").as_uri() in page.links
    assert f"#img-{STEM['02']}" in page.links and f"#img-{STEM['04']}" in page.links
    assert "sub-99_T2w" in text and "#img-sub-99" not in text  # listed, but not on the page: no link
    assert "<td>sub-99/anat/sub-99_T2w.nii.gz</td>" in text  # its source as the table gives it
    assert "annotate next #1" in text and "annotate next #2" in text


def test_page_without_flags_or_group_tables(tmp_path):
    """Only mask sidecars (no dataset description, no flags, no group folder): a page still."""
    sidecar = tmp_path / "sub-x" / "anat" / "sub-x_space-orig_label-SC_desc-T2w_mask.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text("{}")
    (tmp_path / "sub-x" / "anat" / "sub-x_space-orig_res-05mm_label-SC_desc-T2w_mask.json").write_text(
        "{}"
    )  # not an image's mask
    write_study_page(tmp_path)
    page, text = _parse(tmp_path)
    assert [r["data-subject"] for r in page.rows] == ["x"] and page.rows[0]["data-nflags"] == ""
    assert page.rows[0]["data-image"] == "sub-x_space-orig_label-SC_desc-T2w"  # no Sources: the mask's name
    assert "Annotate next" not in text and f'data-dataset="{tmp_path.name}"' in text


def test_group_summaries_write_the_study_page(tmp_path):
    sidecar = tmp_path / "sub-x" / "anat" / "sub-x_space-orig_label-SC_desc-T2w_mask.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"Sources": ["bids:raw:sub-x/anat/sub-x_T2w.nii.gz"]}))
    assert study_page_path(tmp_path) in write_group_summaries(tmp_path)
    assert 'data-image="sub-x_T2w"' in study_page_path(tmp_path).read_text()


def _write(out: str) -> None:
    write_study_page(Path(out))


def test_concurrent_writers_leave_one_whole_page(study, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(study, out)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write, args=(str(out),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(w.exitcode == 0 for w in workers)
    page, text = _parse(out)
    assert len(page.rows) == 4 and text.rstrip().endswith("</html>")
    assert sorted(p.name for p in study_page_path(out).parent.iterdir()) == [".index.html.lock", "index.html"]


# -- in a browser ------------------------------------------------------------------------------
def _chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip("no Chromium: install it (Debian: apt-get install chromium) or set CHROMIUM=/path/to/chrome")


@contextlib.contextmanager
def _read_only_copy(out: Path, dest: Path):
    """A copy of ``out`` without write permission, and immutable for root (who ignores the mode)
    where ``chattr`` works."""
    shutil.copytree(out, dest)
    paths = [dest, *dest.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    immutable = immutable and subprocess.run(["chattr", "-R", "+i", str(dest)], capture_output=True).returncode == 0
    try:
        yield dest
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", str(dest)], check=False)
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_page_in_headless_chromium(study, tmp_path):
    """Opened from a read-only copy through file://: j/k and arrows move, o toggles the overlay,
    f/p rate, n types a note, ratings survive a reload, a click sorts, Export downloads the TSV
    that read_ratings accepts; nothing is written to the folder."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = _chromium()
    with _read_only_copy(study, tmp_path / "readonly") as copy:
        before = _snapshot(copy)
        errors: list[str] = []
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            try:
                page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000}).new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.route(re.compile(r"^https?://"), lambda route: (errors.append(route.request.url), route.abort()))
                page.goto(study_page_path(copy).as_uri())
                _navigate_and_rate(page)
                page.reload()
                _check_kept_and_sort(page)
                with page.expect_download() as download:
                    page.click("#export")
                exported = tmp_path / "exported.tsv"
                download.value.save_as(exported)
                page.screenshot(path=str(tmp_path / "study_page.png"))
                _shot(page, "end")
            finally:
                browser.close()
        after = _snapshot(copy)
    assert errors == []
    assert read_ratings(exported) == {
        "sub-01_T2w": ("fail", "cord cut at the top"),
        "sub-03_T2star": ("pass", ""),
        "sub-02_ses-1_T1w": ("unrated", ""),
        "sub-04_T2w": ("unrated", ""),
    }
    assert exported.read_text().splitlines()[0] == "image\trating\tmodel\tnote"
    # the model that made each rated mask goes with its rating (sub-04's sidecar names none)
    assert read_rated_models(exported) == {"sub-01_T2w": "x", "sub-03_T2star": "x", "sub-02_ses-1_T1w": "x"}
    assert after == before  # the page wrote nothing into the output folder
    assert (tmp_path / "study_page.png").stat().st_size > 10_000


def _shot(page, name: str) -> None:
    """A screenshot into $LUMBO_QC_SCREENSHOTS when set (to look at the page)."""
    if os.environ.get("LUMBO_QC_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["LUMBO_QC_SCREENSHOTS"]) / f"study_page_{name}.png"))


def _current(page) -> str:
    return page.eval_on_selector(".card.current", "card => card.dataset.image")


def _navigate_and_rate(page) -> None:
    assert page.inner_text("#position") == "1 / 4" and _current(page) == "sub-01_T2w"
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert _current(page) == "sub-02_ses-1_T1w" and page.inner_text("#position") == "3 / 4"
    page.keyboard.press("k")
    assert _current(page) == "sub-03_T2star"
    page.keyboard.press("ArrowUp")
    assert _current(page) == "sub-01_T2w"
    card = f"#img-{STEM['01']}"
    assert page.is_visible(f"{card} img.ov") and not page.is_visible(f"{card} img.plain")
    _shot(page, "top")
    size = "img => img.complete ? [img.naturalWidth, img.naturalHeight] : null"
    page.wait_for_function(f"document.querySelector('{card} img.ov').complete")
    assert page.eval_on_selector(f"{card} img.ov", size) == [1500, 300]  # the figure loads from ../sub-01/figures/
    page.keyboard.press("o")
    assert page.is_visible(f"{card} img.plain") and not page.is_visible(f"{card} img.ov")
    page.wait_for_function(f"document.querySelector('{card} img.plain').complete")
    assert page.eval_on_selector(f"{card} img.plain", size) == [1500, 300]
    _shot(page, "no_overlay")
    assert page.is_checked("#overlay") is False
    page.keyboard.press("o")
    assert page.is_visible(f"{card} img.ov")
    page.keyboard.press("f")
    assert page.inner_text(f"{card} .state") == "fail" and page.inner_text(f"#row-{STEM['01']} td.rating") == "fail"
    page.keyboard.press("n")
    page.keyboard.type("cord cut at the top")  # 'j', 'k', 'o', 'p', 'f' typed in the note are text
    page.keyboard.press("Escape")
    assert page.input_value(f"{card} textarea.note") == "cord cut at the top" and _current(page) == "sub-01_T2w"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("p")
    assert _current(page) == "sub-03_T2star" and page.inner_text(f"#img-{STEM['03']} .state") == "pass"
    assert page.inner_text("#counts") == "1 pass · 1 fail · 2 unrated"


def _check_kept_and_sort(page) -> None:
    """After a reload (localStorage): the ratings and note are back; sorting by Dice orders the
    rows and the cards, images without a manual mask last, and j follows the new order."""
    assert page.inner_text(f"#img-{STEM['01']} .state") == "fail"
    assert page.input_value(f"#img-{STEM['01']} textarea.note") == "cord cut at the top"
    assert page.inner_text("#counts") == "1 pass · 1 fail · 2 unrated"
    page.click('th[data-key="dice"]')
    order = page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.dataset.subject)")
    assert order[:2] == ["03", "01"] and sorted(order[2:]) == ["02", "04"]  # 0.75, 0.91, then n/a
    cards = page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.image)")
    assert cards[:2] == ["sub-03_T2star", "sub-01_T2w"]
    page.click('th[data-key="dice"]')  # descending
    assert page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.dataset.subject)")[:2] == ["01", "03"]
    page.click('th[data-key="nflags"]')
    page.click('th[data-key="nflags"]')  # most flags first
    assert page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.dataset.subject)")[:2] == ["01", "03"]
    page.click(f'a[href="#img-{STEM["02"]}"]')  # the annotate-next link makes that image current
    assert _current(page) == "sub-02_ses-1_T1w"


def test_report_figures_are_redrawn_only_when_their_inputs_change(tmp_path, monkeypatch):
    from lumbo_bids.reports import figures as figures_module
    from lumbo_bids.reports.figures import figure_path

    out, raw, cache = tmp_path / "out", tmp_path / "raw", tmp_path / "work"
    subject, session, suffix, shape, zooms, flags, dice, morph = CASES[0]
    anat = _anat(raw, subject, session, suffix, shape, zooms)
    _derivatives(out, anat, flags, dice, morph)
    drawn = []
    real = figures_module.sagittal_figure
    monkeypatch.setattr(figures_module, "sagittal_figure", lambda *a, **k: drawn.append(1) or real(*a, **k))
    report = write_subject_report(out, subject, [anat], "05mm", [], {"Run": "1"}, cache_dir=cache)
    first = report.read_text()
    assert len(drawn) == 2  # with and without the overlay
    write_subject_report(out, subject, [anat], "05mm", [], {"Run": "1"}, cache_dir=cache)
    assert len(drawn) == 2 and report.read_text() == first  # nothing changed: read back
    # a figure damaged or removed in OUTPUT_DIR is drawn again
    sagittal = figure_path(out, subject, STEM["01"], "sagittal")
    sagittal.write_bytes(b"not a png")
    write_subject_report(out, subject, [anat], "05mm", [], {"Run": "1"}, cache_dir=cache)
    assert len(drawn) == 4 and report.read_text() == first
    # a new mask: new figures
    mask = image_output_path(out, anat, "mask")
    image = nib.load(mask)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), mask)
    write_subject_report(out, subject, [anat], "05mm", [], {"Run": "1"}, cache_dir=cache)
    assert len(drawn) == 6 and report.read_text() != first
