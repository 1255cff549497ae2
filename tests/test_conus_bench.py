"""The conus check with a known answer (lumbo_bids.training.conus_bench)."""

from __future__ import annotations

import numpy as np
import pytest

from lumbo_bids.training import conus_bench, synth

SHAPE = (48, 48, 160)  # 24 x 24 x 80 mm at 0.5 mm: small, every phantom keeps its tip in view


@pytest.mark.parametrize("layout", sorted(conus_bench.LAYOUTS))
def test_every_bench_phantom_has_its_tip_in_view_with_cord_above(layout):
    for seed in (1, 2, 3):
        labels = conus_bench.bench_phantom(seed, layout, SHAPE)
        z = np.flatnonzero((labels == synth.CORD).any(axis=(0, 1)))
        assert conus_bench.TIP_RANGE[0] * SHAPE[2] <= z[0] <= conus_bench.TIP_RANGE[1] * SHAPE[2]
        assert z.size * 0.5 >= conus_bench.MIN_CORD_MM
        assert z[-1] == SHAPE[2] - 1  # the cord runs up out of view: the only end is the conus
        has_roots = (labels == synth.ROOTS).any(axis=(0, 1))
        if layout == "none":  # only the filum below the tip, no roots beside the conus
            assert not has_roots[z[0] + 4 :].any()
        else:
            assert has_roots[z[0] : z[0] + 20].any()  # roots beside the conus just above its tip
        np.testing.assert_array_equal(labels, conus_bench.bench_phantom(seed, layout, SHAPE))


def test_the_dorsal_layout_puts_the_roots_behind_the_cord():
    labels = conus_bench.bench_phantom(5, "dorsal", SHAPE)
    z = np.flatnonzero((labels == synth.CORD).any(axis=(0, 1)))[0]
    below = labels[..., max(0, z - 20) : z]  # the cauda equina, 10 mm below the tip
    ys = np.nonzero(below == synth.ROOTS)[1]
    canal_y = np.nonzero(below == synth.CSF)[1]
    assert ys.mean() < canal_y.mean()  # -y is posterior (RPI)


def test_render_gives_the_contrasts_their_order():
    labels = conus_bench.bench_phantom(1, "spread", SHAPE)
    cord, csf = labels == synth.CORD, labels == synth.CSF
    t2, t1 = conus_bench.render(labels, "T2w", 0), conus_bench.render(labels, "T1w", 0)
    assert t2.dtype == np.float32 and t2.shape == SHAPE
    assert t2[cord].mean() < t2[csf].mean() - 0.3
    assert t1[cord].mean() > t1[csf].mean() + 0.2
    np.testing.assert_array_equal(t2, conus_bench.render(labels, "T2w", 0))
    with pytest.raises(ValueError, match="unknown contrast"):
        conus_bench.render(labels, "FLAIR", 0)


def test_end_scores_measure_a_short_end_and_roots_below_the_tip():
    cord = np.zeros((8, 8, 100), dtype=bool)
    cord[2:6, 2:6, 40:] = True  # tip at slice 40 = 20 mm
    right = conus_bench.end_scores(cord, cord, 0.5)
    assert right == {"end_gap_mm": 0.0, "below_tip_mm3": 0.0, "end_dice": 1.0, "dice": 1.0}
    short = cord.copy()
    short[..., 40:50] = False  # stops 5 mm above the tip
    scores = conus_bench.end_scores(short, cord, 0.5)
    assert scores["end_gap_mm"] == 5.0 and scores["below_tip_mm3"] == 0.0
    assert scores["end_dice"] == pytest.approx(2 * 50 / 110)  # 60 end slices of cord, 50 predicted
    long = cord.copy()
    long[3:5, 3:5, 30:40] = True  # a strand 5 mm on below the tip: roots or filum
    scores = conus_bench.end_scores(long, cord, 0.5)
    assert scores["end_gap_mm"] == -5.0 and scores["below_tip_mm3"] == 40 * 0.125
    assert np.isnan(conus_bench.end_scores(np.zeros_like(cord), cord, 0.5)["end_gap_mm"])
    with pytest.raises(ValueError, match="same 3D shape"):
        conus_bench.end_scores(cord[..., :50], cord, 0.5)


def _script():
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))  # it imports evaluate_base_models beside it
    spec = importlib.util.spec_from_file_location("evaluate_conus_phantoms", scripts / "evaluate_conus_phantoms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_counts_ends_off_the_tip_and_their_flags():
    script = _script()
    rows = [
        {"model": "m", "layout": "spread", "contrast": "T2w", "condition": "as_acquired", "end_gap_mm": gap,
         "end_dice": "0.8", "dice": "0.9", "end_flags": flags}
        for gap, flags in (("12.0", "cord_end_uncertain"), ("8.0", ""), ("1.0", ""), ("-2.0", "cord_stops_short"))
    ]  # fmt: skip
    line = script.summary_table(rows, within=5.0).splitlines()[-1]
    assert "+4.5 (-2.0 / +12.0)" in line  # median of 12, 8, 1, -2
    assert "| 2/4 |" in line  # two ends within 5 mm of the tip
    assert line.endswith("| 1/2 / 1/2 |")  # one of the two off ends flagged, one of the two good ones


def test_the_script_scores_a_model_on_a_phantom(tmp_path, capsys):
    """End to end with the shipped network on one phantom: one TSV row per image, a finite end."""
    from pathlib import Path

    script = _script()
    model = Path(__file__).resolve().parents[1] / "lumbo_bids" / "data" / "models" / "cord_seg"
    out = tmp_path / "conus.tsv"
    args = [str(model), "--phantoms", "1", "--layouts", "none", "--contrasts", "T2w", "--conditions", "as_acquired"]
    assert script.main([*args, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == list(script.COLUMNS) and len(lines) == 2
    row = dict(zip(script.COLUMNS, lines[1].split("\t")))
    assert (row["layout"], row["contrast"], row["seed"]) == ("none", "T2w", "10000")
    assert np.isfinite(float(row["end_gap_mm"])) and 0.5 < float(row["dice"]) <= 1.0
    assert "| none | T2w | as_acquired |" in capsys.readouterr().out
