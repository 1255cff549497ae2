"""Fine-tuning parameter search: spec checks, subject-wise folds, and real searches on the
example dataset (locally, and through Ray Tune on a local Ray instance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import DS_SPINE_MINI, REPO, TINY_UNET, tiny_manifest

from lumbo_bids.errors import LumboError
from lumbo_bids.training.search import SearchSpec, load_search_spec, run_search_local, subject_folds

RUN = [sys.executable, str(REPO / "run.py")]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY_SPEC = {
    "folds": 2, "seed": 7, "steps_per_epoch": 2, "batch_size": 2,
    "space": {"learning_rate": [1e-4, 1e-3], "epochs": [1], "patch_size": [[32, 32, 32]]},
}  # fmt: skip


def test_folds_are_disjoint_cover_every_subject_and_are_reproducible():
    subjects = [f"s{i:02d}" for i in range(11)]
    folds = subject_folds(subjects, 3, seed=1)
    flat = [s for fold in folds for s in fold]
    assert sorted(flat) == subjects and len(flat) == len(set(flat))
    assert sorted(len(f) for f in folds) == [3, 4, 4]
    assert subject_folds(list(reversed(subjects)), 3, seed=1) == folds
    assert subject_folds(subjects, 3, seed=2) != folds
    with pytest.raises(LumboError, match="at least 3 subjects"):
        subject_folds(["a", "b"], 3, seed=1)


def test_grid_of_trials_with_defaults():
    spec = SearchSpec(space={"learning_rate": [1e-4, 1e-3], "loss": ["dice", "dice_bce"]}, max_trials=3)
    trials = spec.trials()
    assert len(trials) == 3 and all(t["freeze"] == "none" and t["patch_size"] == [48, 48, 48] for t in trials)
    assert {(t["learning_rate"], t["loss"]) for t in trials} == {(1e-4, "dice"), (1e-4, "dice_bce"), (1e-3, "dice")}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ('{"space": {}}', "non-empty object 'space'"),
        ('{"space": {"lr": [1]}}', "unknown parameter 'lr'"),
        ('{"space": {"freeze": ["decoder"]}}', "'space.freeze'"),
        ('{"space": {"epochs": [1]}, "folds": 1}', "'folds' must be"),
    ],
)
def test_bad_spec_is_one_clear_line(tmp_path, content, message):
    spec = tmp_path / "spec.json"
    spec.write_text(content)
    with pytest.raises(LumboError, match=message) as err:
        load_search_spec(spec)
    assert str(spec) in str(err.value) and "\n" not in str(err.value)


def test_local_search_runs_every_trial_on_the_same_folds():
    seen = []

    def run_fold(params, train, val, fold):
        assert not set(train) & set(val)
        seen.append((params["learning_rate"], tuple(val)))
        return 0.5 + params["learning_rate"] * 100 + fold / 10

    spec = SearchSpec(space={"learning_rate": [1e-3, 2e-3]}, folds=2, seed=3)
    results = run_search_local(spec, ["a", "b", "c", "d"], run_fold)
    np.testing.assert_allclose([r.fold_dice for r in results], [[0.6, 0.7], [0.7, 0.8]])
    folds_per_trial = {lr: [v for l2, v in seen if l2 == lr] for lr in (1e-3, 2e-3)}
    assert folds_per_trial[1e-3] == folds_per_trial[2e-3]


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """A tiny untrained U-Net (32^3 patches, 32 x 32 crops): the search's machinery, not the
    shipped network's fine-tuning (tests/test_group_e2e.py), is what these tests are about."""
    from lumbo_bids.model.artifact import save_artifact
    from lumbo_bids.model.network import build_unet3d
    from lumbo_bids.model.unet_config import UNet3DConfig

    config = {**TINY_UNET, "patch_size": [32, 32, 32]}
    network = build_unet3d(UNet3DConfig.from_dict(config))
    return save_artifact(network, tmp_path_factory.mktemp("init") / "tiny", tiny_manifest(config))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One work dir for the module's searches: the images are preprocessed once (Nipype's cache)."""
    return tmp_path_factory.mktemp("work")


SUBJECTS = ["sctTesting", "unf01"]  # two folds of one subject (PAM50small's 550 mm add nothing here)


def _search(tmp_path, init, work, *extra):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY_SPEC))
    out = tmp_path / "out"
    proc = subprocess.run(
        [*RUN, str(DS_SPINE_MINI), str(out), "group", "-w", str(work), "--skip-bids-validation",
         "--nprocs", "2", "--search", str(spec), "--init-model", str(init), "--participant-label", *SUBJECTS, *extra],
        capture_output=True, text=True, env=ENV, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "group" / "search"


def _check_search_outputs(search_dir):
    rows = [r.split("\t") for r in (search_dir / "trials.tsv").read_text().splitlines()]
    header = rows[0]
    assert header[0] == "trial" and "dice_fold0" in header and "dice_fold1" in header and "mean_dice" in header
    assert len(rows) == 3
    table = [dict(zip(header, r)) for r in rows[1:]]
    assert sorted(float(t["learning_rate"]) for t in table) == [1e-4, 1e-3]
    for t in table:  # ASHA (Ray) may stop a bad trial after its first fold: n/a for the rest
        dice = [float(t[f"dice_fold{f}"]) for f in range(int(t["folds_run"]))]
        assert dice and all(0 <= d <= 1 for d in dice)
        assert float(t["mean_dice"]) == pytest.approx(np.mean(dice), abs=1e-3)
        assert all(t[f"dice_fold{f}"] == "n/a" for f in range(len(dice), 2))
    assert any(t["folds_run"] == "2" for t in table)
    folds = json.loads((search_dir / "folds.json").read_text())["folds"]
    flat = [s for f in folds for s in f]
    assert len(folds) == 2 and sorted(flat) == SUBJECTS
    assert (search_dir / "dice_vs_parameters.png").read_bytes()[:4] == b"\x89PNG"
    best = json.loads((search_dir / "best_config.json").read_text())
    complete = [float(t["mean_dice"]) for t in table if t["folds_run"] == "2"]
    assert best["search"]["mean_dice"] == pytest.approx(max(complete), abs=1e-4)
    return folds, best


@pytest.mark.slow
def test_local_search_on_the_example_dataset_and_best_config_is_reusable(tmp_path, tiny_init, work):
    search_dir = _search(tmp_path, tiny_init, work)
    _, best = _check_search_outputs(search_dir)
    rows = (search_dir / "trials.tsv").read_text().splitlines()
    assert all(r.split("\t")[-1] == "2" for r in rows[1:])  # locally every trial runs every fold
    # the best configuration drives a final fine-tuning on all subjects
    out2 = tmp_path / "final"
    proc = subprocess.run(
        [*RUN, str(DS_SPINE_MINI), str(out2), "group", "-w", str(work), "--skip-bids-validation",
         "--config-file", str(search_dir / "best_config.json"), "--validation-subjects", "sctTesting",
         "--init-model", str(tiny_init), "--participant-label", *SUBJECTS],
        capture_output=True, text=True, env=ENV, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out2 / "group" / "model_card.json").read_text())
    assert card["hyperparameters"]["learning_rate"] == best["learning_rate"]
    assert card["hyperparameters"]["steps_per_epoch"] == 2 and card["epochs_run"] == 1
    assert card["hyperparameters"]["patch_size"] == [32, 32, 32]
    assert card["initial_model"]["name"] == "tiny-seg"  # the run's --init-model: the search's "shipped"


@pytest.mark.slow
def test_search_through_ray_tune_on_a_local_ray_instance(tmp_path, tiny_init, work):
    search_dir = _search(tmp_path, tiny_init, work, "--ray-address", "local")
    folds, _ = _check_search_outputs(search_dir)
    # the same fold assignment as the local search (same seed, same subjects)
    assert folds == subject_folds(SUBJECTS, 2, seed=7)
