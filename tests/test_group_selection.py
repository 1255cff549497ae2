"""The group level's image selection with --qc-ratings, and its annotate-next outputs, on the
example dataset (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import DS_SPINE_MINI, LABELS

from lumbo_bids.errors import LumboError
from lumbo_bids.group.inputs import select_images
from lumbo_bids.group.study import write_annotation_outputs
from lumbo_bids.ratings import format_ratings
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects


@pytest.fixture(scope="module")
def inputs():
    layout = build_layout(DS_SPINE_MINI)
    return collect_anat(layout, select_subjects(layout, None), None, {}, LABELS)


def _config(tmp_path, ratings=None):
    return SimpleNamespace(qc_ratings=ratings, output_dir=tmp_path / "out", bids_dir=DS_SPINE_MINI, accepted_masks=True)


def test_images_rated_fail_are_left_out_and_ranked_first(inputs, tmp_path):
    ratings = tmp_path / "ratings.tsv"
    rows = {"sub-PAM50small_T2w": ("fail", "mask drawn on the wrong side"), "sub-unf01_T1w": ("pass", ""),
            "sub-sctLumbar_T2w": ("fail", "automatic mask misses the conus")}  # fmt: skip
    ratings.write_text(format_ratings(rows))
    anats, rated_fail = select_images(_config(tmp_path, ratings), inputs)
    names = [a.stem for a in anats]
    assert "sub-PAM50small_T2w" not in names and "sub-unf01_T1w" in names and len(names) == 6
    assert rated_fail == {"sub-PAM50small_T2w", "sub-sctLumbar_T2w"}
    config = _config(tmp_path, ratings)
    write_annotation_outputs(config, inputs, rated_fail)
    table = (config.output_dir / "group" / "annotate_next.tsv").read_text().splitlines()
    assert len(table) == 2 and "sub-sctLumbar_T2w" in table[1] and "rated fail" in table[1]
    page = (config.output_dir / "qc" / "index.html").read_text()
    assert "annotate" in page.lower()


def test_without_ratings_every_masked_image_is_used(inputs, tmp_path):
    anats, rated_fail = select_images(_config(tmp_path), inputs)
    assert len(anats) == 7 and rated_fail == set()


def test_every_masked_image_rated_fail_is_a_clear_error(inputs, tmp_path):
    ratings = tmp_path / "ratings.tsv"
    masked = [a.stem for items in inputs.values() for a in items if a.mask is not None]
    ratings.write_text(format_ratings({name: ("fail", "") for name in masked}))
    with pytest.raises(LumboError, match="every image with a manual mask is rated fail"):
        select_images(_config(tmp_path, ratings), inputs)


def test_images_rated_fail_whose_contrast_no_label_has_are_named(inputs, tmp_path, caplog):
    """Every T2*w mask rated fail: the T2*w images are left out, and the warning says that training
    on T1w and T2w alone may not help them (the rate-don't-draw run on the bundled data)."""
    ratings = tmp_path / "ratings.tsv"
    ratings.write_text(format_ratings({"sub-sctTesting_T2starw": ("fail", ""), "sub-unf01_T2star": ("fail", "")}))
    with caplog.at_level("WARNING", logger="lumbo_bids.group"):
        anats, _ = select_images(_config(tmp_path, ratings), inputs)
    assert {a.suffix for a in anats} == {"T1w", "T2w"}
    assert "a contrast (T2star, T2starw) that no training label has: sub-sctTesting_T2starw, sub-unf01_T2star" in caplog.text
    caplog.clear()
    ratings.write_text(format_ratings({"sub-PAM50small_T2w": ("fail", "")}))  # other T2w images stay: no warning
    with caplog.at_level("WARNING", logger="lumbo_bids.group"):
        select_images(_config(tmp_path, ratings), inputs)
    assert "no training label has" not in caplog.text
