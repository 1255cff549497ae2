"""The conus fitting test (scripts/fit_conus_phantoms.py): its patches, its scores, one short run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lumbo_bids.model.artifact import load_artifact
from lumbo_bids.model.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SHAPE = (48, 48, 160)  # small; bench phantoms keep their tip in view
MODEL = REPO / "lumbo_bids" / "data" / "models" / "cord_seg"


@pytest.fixture(scope="module")
def fit():
    spec = importlib.util.spec_from_file_location("fit_conus_phantoms", REPO / "scripts" / "fit_conus_phantoms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plan():
    return load_artifact(MODEL).plan


def _cases(fit, plan):
    standardise = Predictor(None, plan).standardise
    return [fit.phantom_case(seed, layout, "T2w", standardise, SHAPE) for seed, layout in ((1, "none"), (2, "spread"))]


def test_tip_patches_hold_the_tip_and_the_slice_below_it(fit, plan):
    cases = _cases(fit, plan)
    rng = np.random.default_rng(0)
    images, targets = fit.training_batch(cases, 12, 32, 1.0, rng, synthetic=False, augment=None)
    assert images.shape == targets.shape == (12, 32, 32, 32, 1)
    for target in targets[..., 0]:
        z = target.any(axis=(0, 1))
        assert z.any() and not z[0]  # the cord starts inside the patch: its tip is there
    _, targets = fit.training_batch(cases, 12, 32, 0.0, rng, synthetic=True, augment=None)
    assert all(t.any() for t in targets)  # centred on the cord


def test_end_row_of_a_prediction_that_is_the_cord(fit, plan):
    case = _cases(fit, plan)[1]

    class Exact(Predictor):  # its probability is the phantom's cord: the answer is known
        def probability(self, standardised, overlap=None, tta=False):
            return case["cord"].astype(np.float32)

    row = fit.end_row(Exact(None, plan), case)
    tip = np.flatnonzero(case["cord"].any(axis=(0, 1)))[0]
    assert row["end_gap_mm"] == 0.0 and row["dice"] == pytest.approx(1.0) and row["p_max_near_tip"] == 1.0
    assert row["csa_at_end_mm2"] == pytest.approx(case["cord"][..., tip].sum() * plan.resolution**2)
    summary = fit.summary([row, {**row, "end_gap_mm": 12.0}])
    assert summary["within"] == 1 and summary["end_gap_median_mm"] == 6.0


def test_a_short_run_writes_its_report(fit, tmp_path):
    out = tmp_path / "fit.json"
    argv = ["--out", str(out), "--steps", "2", "--phantoms", "2", "--held-out", "1", "--synthetic", "--evaluate-every", "1",
            "--domain-randomisation", "1", "--shape", *map(str, SHAPE)]  # fmt: skip
    assert fit.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["arguments"]["steps"] == 2 and report["seconds"] > 0
    assert [e["step"] for e in report["evaluations"]] == [1, 2]
    last = report["evaluations"][-1]
    assert last["training"]["summary"]["cases"] == 2 and len(last["held_out"]["rows"]) == 6
    assert {row["layout"] for row in last["held_out"]["rows"]} == {"none", "spread", "dorsal"}


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--phantoms", "0"], ["--shape", "32", "64", "300"]])
def test_bad_arguments_are_one_line_errors(fit, tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        fit.main(["--out", str(tmp_path / "fit.json"), *argv])
    assert stop.value.code == 2 and not (tmp_path / "fit.json").exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: --" in last and ("at least 1" in last or "patch" in last)
