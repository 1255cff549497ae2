"""Seed ensembles (lumbo_bids.model.architectures, lumbo_bids.training.ensembles): one artifact, the mean of its members' probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_UNET, tiny_manifest

from lumbo_bids.model.architectures import build_ensemble
from lumbo_bids.model.artifact import ArtifactError, load_artifact, save_artifact
from lumbo_bids.model.network import build_unet3d, freeze_depth, members_of
from lumbo_bids.model.predictor import Predictor
from lumbo_bids.model.unet_config import UNet3DConfig
from lumbo_bids.training.ensembles import ensemble_artifact
from lumbo_bids.training.trainer import TrainConfig, train


def _member(tmp_path: Path, seed: int, config: dict = TINY_UNET) -> Path:
    keras.utils.set_random_seed(seed)
    model = build_unet3d(UNet3DConfig.from_dict(dict(config)))
    card = tiny_manifest(config)
    card["training"] = {"seed": seed, "reproduce": f"train --seed {seed}"}
    return save_artifact(model, tmp_path / f"member{seed}", card)


def _tube(shape=(32, 32, 40)) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.repeat(((xx - 16) ** 2 + (yy - 16) ** 2 <= 9)[:, :, None], shape[2], axis=2)
    image = mask * 3.0 + np.random.default_rng(0).normal(0, 0.5, shape)
    return image.astype(np.float32), mask


def test_ensemble_artifact_gives_the_mean_of_its_members(tmp_path):
    members = [_member(tmp_path, seed) for seed in (1, 2)]
    out = ensemble_artifact(members, tmp_path / "ensemble", overlap=0.25, reproduce="make_ensemble")
    artifact = load_artifact(out)
    assert artifact.architecture == "ensemble" and artifact.plan.overlap == 0.25
    assert artifact.plan.threshold == 0.5 and artifact.plan.patch_size == (16, 16, 16)
    card = artifact.manifest["training"]
    assert [m["seed"] for m in card["members"]] == [1, 2] and card["reproduce"] == "make_ensemble"
    assert [m["checksum"] for m in card["members"]] == [load_artifact(m).checksum for m in members]

    x = np.random.default_rng(5).normal(size=(2, 16, 16, 24, 1)).astype(np.float32)
    singles = [np.asarray(load_artifact(m).build_model()(x)) for m in members]
    assert not np.allclose(singles[0], singles[1])  # two different networks
    np.testing.assert_allclose(np.asarray(artifact.build_model()(x)), np.mean(singles, axis=0), atol=1e-6)

    # the participant level's path: standardise, sliding windows, post-processing
    image, _ = _tube()
    predictor = Predictor.from_artifact(artifact)
    assert predictor.probability(predictor.standardise(image)).shape == image.shape
    assert set(np.unique(predictor.segment(image))) <= {0, 1}


def test_members_that_differ_are_refused_in_one_line(tmp_path):
    first = _member(tmp_path, 1)
    wider = _member(tmp_path, 2, {**TINY_UNET, "base_filters": 4})
    with pytest.raises(ArtifactError) as err:
        ensemble_artifact([first, wider], tmp_path / "ensemble")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{wider}: differs from member 0 in 'architecture'")
    with pytest.raises(ArtifactError, match="at least 2 members"):
        ensemble_artifact([first], tmp_path / "ensemble")
    assert not (tmp_path / "ensemble").exists()


def test_a_bad_ensemble_config_is_an_artifact_error(tmp_path):
    out = ensemble_artifact([_member(tmp_path, 1), _member(tmp_path, 2)], tmp_path / "ensemble")
    manifest = json.loads((out / "model.json").read_text())
    manifest["architecture"]["config"]["members"] = 0
    (out / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="invalid ensemble config: 'members' must be an integer"):
        load_artifact(out).build_model()


def test_freezing_an_ensemble_freezes_every_members_encoder():
    model = build_ensemble({"members": 2, "member": {"name": "unet3d", "config": TINY_UNET}})
    frozen = freeze_depth(model, "encoder")
    nets = members_of(model)
    assert [n.name for n in nets] == ["member0", "member1"]
    for net in nets:
        assert {f"{net.name}/{layer.name}" for layer in net.layers if layer.name.startswith("enc")} <= set(frozen)
        assert all(not layer.trainable for layer in net.layers if layer.name.startswith("enc"))
        assert net.get_layer("head_conv").trainable
    assert freeze_depth(model, "none") == [] and all(layer.trainable for net in nets for layer in net.layers)


def test_an_ensemble_fine_tunes_like_a_single_network(tmp_path):
    from lumbo_bids.training.cases import TrainingCase

    image, mask = _tube()
    cases = []
    for k in range(2):
        np.save(tmp_path / f"c{k}_image.npy", np.roll(image, 3 * k, axis=0))
        np.save(tmp_path / f"c{k}_mask.npy", np.roll(mask, 3 * k, axis=0).astype(np.uint8))
        cases.append(TrainingCase(f"sub-{k}", f"c{k}", tmp_path / f"c{k}_image.npy", tmp_path / f"c{k}_mask.npy"))
    config = {"members": 2, "member": {"name": "unet3d", "config": TINY_UNET}}

    def model_fn():
        keras.utils.set_random_seed(7)
        return build_ensemble(config)

    cfg = TrainConfig(
        epochs=2, steps_per_epoch=3, batch_size=2, learning_rate=1e-2, patch_size=(16, 16, 16),
        val_patches_per_case=2, early_stopping_patience=0, seed=0, freeze="encoder",
    )  # fmt: skip
    result = train(model_fn, cases[:1], cases[1:], cfg, tmp_path / "run", progress=False)
    start = members_of(model_fn())
    for before, after in zip(start, members_of(result.model)):
        np.testing.assert_array_equal(
            before.get_layer("enc0_conv1").get_weights()[0], after.get_layer("enc0_conv1").get_weights()[0]
        )
        assert not np.array_equal(before.get_layer("head_conv").get_weights()[0], after.get_layer("head_conv").get_weights()[0])
    saved = save_artifact(
        result.model, tmp_path / "tuned", {**tiny_manifest(TINY_UNET), "architecture": {"name": "ensemble", "config": config}}
    )
    reloaded = load_artifact(saved).build_model()
    for a, b in zip(reloaded.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_make_ensemble_script_writes_a_loadable_ensemble(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_ensemble", Path(__file__).parents[1] / "scripts" / "make_ensemble.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    members = [str(_member(tmp_path, seed)) for seed in (1, 2)]
    assert script.main([*members, "--overlap", "0.25", "--out", str(tmp_path / "ens")]) == 0
    artifact = load_artifact(tmp_path / "ens")
    assert artifact.plan.overlap == 0.25 and artifact.architecture_config["members"] == 2
    assert artifact.manifest["training"]["reproduce"].startswith("scripts/make_ensemble.py ")
    wider = str(_member(tmp_path, 3, {**TINY_UNET, "base_filters": 4}))
    assert script.main([members[0], wider, "--out", str(tmp_path / "bad")]) != 0
    assert not (tmp_path / "bad").exists()
