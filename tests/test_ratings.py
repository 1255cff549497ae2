"""The ratings TSV that the study QC page exports, read back (lumbo_bids.ratings), and the group
level's ``--qc-ratings`` option."""

from __future__ import annotations

import pytest

from lumbo_bids.cli.parser import build_parser
from lumbo_bids.config import Config
from lumbo_bids.errors import ExitCode, LumboError
from lumbo_bids.ratings import exclude_failed, format_ratings, read_ratings
from lumbo_bids.utils.bids import AnatInput

IMAGES = ("sub-01_T2w", "sub-02_ses-1_T1w", "sub-03_T2star", "sub-04_T2w")


def test_ratings_round_trip(tmp_path):
    ratings = {
        "sub-01_T2w": ("fail", "cord cut\tat the top\n(C2)"),
        "sub-02_ses-1_T1w": ("pass", ""),
        "sub-03_T2star": ("unrated", ""),
    }
    path = tmp_path / "ratings.tsv"
    path.write_text(format_ratings(ratings))
    assert path.read_text().splitlines()[0] == "image\trating\tnote"
    assert read_ratings(path) == {**ratings, "sub-01_T2w": ("fail", "cord cut at the top (C2)")}


def test_ratings_tolerate_spreadsheet_habits(tmp_path):
    path = tmp_path / "ratings.tsv"
    path.write_text("\ufeffImage\tRating\tNote\r\nsub-01_T2w.nii.gz\tFAIL\r\n\r\nsub-02_T1w\tpass\tok\r\n")
    assert read_ratings(path) == {"sub-01_T2w": ("fail", ""), "sub-02_T1w": ("pass", "ok")}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "row 1: empty file"),
        ("name\tscore\n", "row 1: the header must name the columns image, rating and note"),
        ("image\trating\tnote\nsub-01_T2w\tbad\t\n", "row 2: rating 'bad' of sub-01_T2w is not one of pass, fail, unrated"),
        ("image\trating\tnote\nsub-01_T2w\tpass\t\n\nsub-01_T2w\tfail\tx\n", "row 4: sub-01_T2w was already rated in row 2"),
        ("image\trating\tnote\nsub-01_T2w\n", "row 2: 1 tab-separated field(s), the header has 3"),
        ("image\trating\tnote\n\tpass\t\n", "row 2: the image name is empty"),
    ],
)
def test_malformed_ratings_name_the_file_and_row(tmp_path, content, message):
    path = tmp_path / "ratings.tsv"
    path.write_text(content)
    with pytest.raises(LumboError) as error:
        read_ratings(path)
    assert str(error.value).startswith(f"{path}, {message}") and "\n" not in str(error.value)
    assert error.value.code == ExitCode.BAD_DATA


def test_missing_ratings_file(tmp_path):
    with pytest.raises(LumboError, match="does not exist") as error:
        read_ratings(tmp_path / "nope.tsv")
    assert error.value.code == ExitCode.NO_INPUT


def test_exclude_failed_by_image_stem(tmp_path):
    anats = [AnatInput(tmp_path / f"{name}.nii.gz", name.split("_")[0][4:], None, name.split("_")[-1]) for name in IMAGES]
    ratings = {"sub-01_T2w": ("fail", "bad"), "sub-02_ses-1_T1w": ("pass", ""), "sub-03_T2star": ("unrated", "")}
    kept, excluded = exclude_failed(anats, ratings)
    assert [a.stem for a in excluded] == ["sub-01_T2w"]
    assert [a.stem for a in kept] == ["sub-02_ses-1_T1w", "sub-03_T2star", "sub-04_T2w"]


def test_qc_ratings_option(tmp_path):
    ratings, bids = tmp_path / "r.tsv", tmp_path / "bids"
    bids.mkdir()
    args = [str(bids), str(tmp_path / "out"), "group", "-w", str(tmp_path / "work"), "--qc-ratings", str(ratings)]
    config = Config.from_namespace(build_parser().parse_args(args))
    assert config.qc_ratings == ratings
    with pytest.raises(LumboError, match=r"--qc-ratings .*r\.tsv does not exist") as error:
        config.check_paths()
    assert error.value.code == ExitCode.NO_INPUT
    ratings.write_text("image\trating\tnote\n")
    config.check_paths()
    assert config.to_dict()["qc_ratings"] == str(ratings)
