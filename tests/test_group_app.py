"""The group level's application layer (lumbo_bids.group), fast: no Nipype, no command line, a
tiny network trained for two steps on synthetic crops whose cord is known."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_UNET, tiny_manifest

from lumbo_bids.config import Config
from lumbo_bids.group.fine_tune import fine_tune_and_report, run_settings, starting_intensity, train_config
from lumbo_bids.model.artifact import load_artifact, save_artifact
from lumbo_bids.model.network import build_unet3d
from lumbo_bids.model.unet_config import UNet3DConfig
from lumbo_bids.training.finetune import RawCase

MANIFEST = tiny_manifest(TINY_UNET, overlap=0.25)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    return save_artifact(
        build_unet3d(UNet3DConfig.from_dict(dict(TINY_UNET))), tmp_path_factory.mktemp("init") / "tiny", MANIFEST
    )


def _case(out: Path, subject: str, shift: int) -> RawCase:
    """A 32 x 32 x 24 crop with a bright tube of radius 3 (the cord) off centre by ``shift``."""
    xx, yy = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    cord = np.repeat(((xx - 16 - shift) ** 2 + (yy - 16) ** 2 <= 9)[:, :, None], 24, axis=2)
    image = (cord * 3.0 + np.random.default_rng(shift + 10).normal(0, 0.5, cord.shape)).astype(np.float32)
    name = f"sub-{subject}_T2w"
    np.save(out / f"{name}_image.npy", image)
    np.save(out / f"{name}_mask.npy", cord.astype(np.uint8))
    return RawCase(f"sub-{subject}", name, "T2w", out / f"{name}_image.npy", out / f"{name}_mask.npy")


def _config(tmp_path: Path, **changes) -> Config:
    settings = dict(epochs=1, steps_per_epoch=2, batch_size=2, localiser_finetune=False, random_seed=3)
    return Config(tmp_path / "bids", tmp_path / "out", "group", tmp_path / "work", **{**settings, **changes})


def test_run_settings_become_one_train_config_with_the_models_patch(tiny_model, tmp_path):
    init = load_artifact(tiny_model)
    cfg = train_config(init, **run_settings(_config(tmp_path, learning_rate=3e-4, freeze_encoder=True)))
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.learning_rate, cfg.freeze, cfg.seed) == (1, 2, 3e-4, "encoder", 3)
    assert cfg.patch_size == (16, 16, 16)  # the model's, as no config file gave one
    assert train_config(init, **run_settings(_config(tmp_path, patch_size=(24, 24, 24)))).patch_size == (24, 24, 24)
    assert starting_intensity(init) == MANIFEST["preprocessing"]["intensity"]
    assert starting_intensity(init, from_scratch=True) is None


def test_fine_tune_and_report_writes_the_model_its_plan_and_its_card(tiny_model, tmp_path):
    data = tmp_path / "cases"
    data.mkdir()
    train_raw = [_case(data, "a", 0), _case(data, "b", 2)]
    val_raw = [_case(data, "c", -2)]
    config = _config(tmp_path)
    init = load_artifact(tiny_model)
    plan = init.plan.replace(crop_size=(40, 40))  # as --crop-size 40 40 would (with_overrides)
    assert fine_tune_and_report(config, init, train_raw, val_raw, plan) == 0

    group = config.output_dir / "group"
    tuned = load_artifact(group / "model")
    manifest = tuned.manifest
    # the fine-tuned model's plan: the starting one's with this run's crop (what it was trained on)
    assert tuned.plan == plan.replace(intensity=MANIFEST["preprocessing"]["intensity"])
    assert manifest["preprocessing"]["crop_size"] == [40, 40] and manifest["inference"] == MANIFEST["inference"]
    assert manifest["name"] == "tiny-seg-finetuned" and "localiser" not in manifest
    card = json.loads((group / "model_card.json").read_text())
    assert card == manifest["training"]
    assert (card["train_subjects"], card["validation_subjects"]) == (["sub-a", "sub-b"], ["sub-c"])
    assert card["hyperparameters"]["steps_per_epoch"] == 2 and card["epochs_run"] == 1
    assert card["localiser"] == {"fine_tuned": False, "used": "the shipped localiser"}
    rows = (group / "validation_dice.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["image", "subject", "dice_before", "dice_after"]
    assert [r.split("\t")[:2] for r in rows[1:]] == [["sub-c_T2w", "sub-c"]]
    after = float(rows[1].split("\t")[3])
    assert after == pytest.approx(card["validation_dice_after"]["sub-c_T2w"], abs=1e-4)
