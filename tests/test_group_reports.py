"""Group tables and page from participant-level derivatives (written here by hand)."""

from __future__ import annotations

import json

from lumbo_bids.reports.group import write_group_summaries


def _write(path, meta, tsv):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta))
    path.with_suffix(".tsv").write_text(tsv)


def test_group_tables_aggregate_every_image(tmp_path):
    anat = tmp_path / "sub-01" / "anat"
    _write(anat / "sub-01_space-orig_label-SC_desc-T2w_evaluation.json",
           {"Dice": 0.91, "HD95_mm": 1.5, "RelativeVolumeDifference": -0.02}, "slice\tdice\n0\tn/a\n1\t0.9\n")  # fmt: skip
    _write(tmp_path / "sub-02" / "anat" / "sub-02_space-orig_label-SC_desc-T1w_evaluation.json",
           {"Dice": 0.8, "HD95_mm": None, "RelativeVolumeDifference": 0.1}, "slice\tdice\n0\t0.7\n")  # fmt: skip
    _write(anat / "sub-01_space-orig_label-SC_desc-T2w_morphometrics.json",
           {"CordVolume_mm3": 1234.5, "CordLength_mm": 60.0, "MeanCSA_mm2": 70.1, "SlicesWithCord": 30,
            "ConusTip_mm": [1.0, -2.0, -300.5]}, "slice\tcsa_mm2\n")  # fmt: skip
    written = write_group_summaries(tmp_path)
    assert [p.name for p in written] == ["group_evaluation.tsv", "group_morphometrics.tsv", "group_report.html"]
    evaluation = (tmp_path / "group" / "group_evaluation.tsv").read_text().splitlines()
    assert evaluation == [
        "image\tDice\tHD95_mm\tRelativeVolumeDifference",
        "sub-01_space-orig_label-SC_desc-T2w\t0.9100\t1.5000\t-0.0200",
        "sub-02_space-orig_label-SC_desc-T1w\t0.8000\tn/a\t0.1000",
    ]
    morph = (tmp_path / "group" / "group_morphometrics.tsv").read_text().splitlines()
    assert morph[1].split("\t")[-1] == "-300.5000" and len(morph) == 2
    page = (tmp_path / "group" / "group_report.html").read_text()
    assert "mean Dice 0.855" in page and page.count("data:image/png;base64,") == 1 and "http" not in page


def test_nothing_to_aggregate_writes_nothing(tmp_path):
    assert write_group_summaries(tmp_path) == []
    assert not (tmp_path / "group").exists()
