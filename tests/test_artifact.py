"""Model artifact: save/load round trip, archives, atomic overwrite, and every refusal."""

from __future__ import annotations

import gc
import json
import pickle
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import lumbo_bids.model as model_pkg
from lumbo_bids.errors import ExitCode, LumboError
from lumbo_bids.model import artifact as art
from lumbo_bids.model import unet_config
from lumbo_bids.model.architectures import ARCHITECTURES
from lumbo_bids.model.artifact import ArtifactError, load_artifact, save_artifact

TINY = "tinyconv3d"


def build_tiny(config: dict[str, Any]) -> keras.Model:
    """Fully convolutional 3D net: ``depth`` conv layers of ``filters`` channels + sigmoid head."""
    inputs = keras.Input((None, None, None, 1))
    x = inputs
    for _ in range(config.get("depth", 1)):
        x = keras.layers.Conv3D(config["filters"], 3, padding="same", activation="relu")(x)
    if config.get("head", True):
        x = keras.layers.Conv3D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, x)


def manifest(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "tiny-test",
        "version": "0.0.1",
        "architecture": {"name": TINY, "config": {"filters": 3}},
        "task": "segmentation",
        "contrasts": ["T2w", "T2starw"],
        "preprocessing": {
            "orientation": "RPI",
            "resolution_mm": 0.5,
            "crop_size": (64, 64),
            "patch_size": np.array([8, 8, 8]),
            "intensity": {"method": "nyul", "percentiles": [1, 50, 99], "standard": [0, 0.5, 1]},
        },
        "inference": {"threshold": 0.5, "overlap": 0.5, "blend": "gaussian"},
        "training": {"epochs": 1, "dataset": "synthetic"},
    }
    base.update(overrides)
    return base


@pytest.fixture(autouse=True)
def tiny_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ARCHITECTURES, TINY, build_tiny)


@pytest.fixture()
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_tiny({"filters": 3})


@pytest.fixture()
def saved(tmp_path: Path, tiny_model: keras.Model) -> Path:
    return save_artifact(tiny_model, tmp_path / "artifact", manifest())


def _random_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, 9, 10, 11, 1)).astype(np.float32)


def _edit_manifest(path: Path, **changes: Any) -> None:
    data = json.loads((path / "model.json").read_text())
    data.update(changes)
    (path / "model.json").write_text(json.dumps(data))


def _assert_one_line(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for word in words:
        assert word in message, message
    clone = pickle.loads(pickle.dumps(err.value))  # nipype ships errors between processes
    assert (type(clone), str(clone), clone.code) == (type(err.value), message, err.value.code)


def test_round_trip_gives_identical_predictions(saved: Path, tiny_model: keras.Model) -> None:
    loaded = load_artifact(saved)
    x = _random_input()
    np.testing.assert_array_equal(
        np.asarray(loaded.build_model()(x, training=False)),
        np.asarray(tiny_model(x, training=False)),
    )
    data = json.loads((saved / "model.json").read_text())
    assert data["format"] == "lumbo_bids-model" and data["format_version"] == 1
    assert data["preprocessing"]["patch_size"] == [8, 8, 8]  # numpy array became a JSON list
    assert data["files"] == {"weights.weights.h5": loaded.checksum}
    assert loaded.checksum == art.sha256_file(saved / "weights.weights.h5")
    assert (loaded.architecture, loaded.task) == (TINY, "segmentation")
    assert loaded.contrasts == ["T2w", "T2starw"]
    assert (loaded.plan.patch_size, loaded.plan.resolution, loaded.plan.threshold) == ((8, 8, 8), 0.5, 0.5)
    assert data["training"] == {"epochs": 1, "dataset": "synthetic"} and data["created"]
    loaded.check_compatible("T2w")


@pytest.mark.parametrize("fmt,suffix", [("zip", ".zip"), ("gztar", ".tar.gz")])
def test_archive_loads(saved: Path, tiny_model: keras.Model, tmp_path: Path, fmt: str, suffix: str) -> None:
    packed = shutil.make_archive(str(tmp_path / "packed"), fmt, root_dir=saved.parent, base_dir=saved.name)
    archive = Path(packed)
    assert archive.name.endswith(suffix)
    shutil.rmtree(saved)  # the archive must be self-sufficient
    loaded = load_artifact(archive)
    assert loaded.source == archive and loaded.origin == archive
    x = _random_input(1)
    np.testing.assert_array_equal(loaded.build_model()(x), tiny_model(x))
    with pytest.raises(ArtifactError) as err:
        loaded.check_compatible("T1w")
    _assert_one_line(err, archive, "T1w")
    extracted = loaded.path
    assert extracted.is_dir() and not extracted.is_relative_to(tmp_path)
    del loaded, err
    gc.collect()
    assert not extracted.exists()  # the extraction folder lives as long as the artifact


def test_archive_of_artifact_files_at_root(saved: Path, tmp_path: Path) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "flat"), "zip", root_dir=saved))
    assert load_artifact(archive).checksum == load_artifact(saved).checksum


def test_corrupt_weights_fail_checksum(saved: Path) -> None:
    weights = saved / "weights.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "checksum", "weights.weights.h5")
    recorded = json.loads((saved / "model.json").read_text())["files"]["weights.weights.h5"]
    assert load_artifact(saved, verify=False).checksum != recorded


def test_malformed_json(saved: Path) -> None:
    (saved / "model.json").write_text('{"format": "lumbo_bids-model",\n "name": ')
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "not valid JSON")


def test_missing_weights(saved: Path) -> None:
    (saved / "weights.weights.h5").unlink()
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "missing", "weights.weights.h5")
    assert err.value.code == ExitCode.NO_INPUT


def test_missing_directory_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "nowhere")
    _assert_one_line(err, tmp_path / "nowhere", "not found")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "empty")
    _assert_one_line(err, tmp_path / "empty", "missing model.json")


def test_unknown_architecture(saved: Path) -> None:
    _edit_manifest(saved, architecture={"name": "resnet9000", "config": {}})
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "unknown architecture", "resnet9000")


def test_future_format_version_and_unknown_format(saved: Path) -> None:
    _edit_manifest(saved, format_version=2)
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "format_version 2", "newer")
    _edit_manifest(saved, format_version=1, format="onnx")
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, "unknown format", "onnx")


@pytest.mark.parametrize(
    "change,word",
    [
        ({"task": "registration"}, "task"),
        ({"contrasts": []}, "contrasts"),
        ({"inference": {"threshold": 1.5, "overlap": 0.5, "blend": "gaussian"}}, "threshold"),
        ({"inference": {"threshold": 0.5, "overlap": 0.5, "blend": "max"}}, "blend"),
        ({"files": {"weights.weights.h5": "abc"}}, "files"),
        ({"files": {"../weights.weights.h5": "0" * 64, "weights.weights.h5": "0" * 64}}, "files"),
    ],
)
def test_invalid_manifest_fields(saved: Path, change: dict[str, Any], word: str) -> None:
    _edit_manifest(saved, **change)
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved)
    _assert_one_line(err, saved, word)


def test_bad_preprocessing_refused_at_save(tmp_path: Path, tiny_model: keras.Model) -> None:
    bad = manifest()
    intensity = {"method": "nyul", "percentiles": [1, 99]}  # no standard scale
    bad["preprocessing"] = {**bad["preprocessing"], "intensity": intensity}
    with pytest.raises(ArtifactError) as err:
        save_artifact(tiny_model, tmp_path / "a", bad)
    _assert_one_line(err, tmp_path / "a", "standard")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_incompatible_contrast(saved: Path) -> None:
    loaded = load_artifact(saved)
    loaded.check_compatible("T2starw")
    with pytest.raises(ArtifactError) as err:
        loaded.check_compatible("T1w")
    _assert_one_line(err, saved, "contrast 'T1w' not supported")
    assert isinstance(err.value, ValueError) and isinstance(err.value, LumboError)


@pytest.mark.parametrize("config", [{"filters": 5}, {"filters": 3, "depth": 2}])
def test_weights_that_do_not_fit(saved: Path, config: dict[str, Any]) -> None:
    _edit_manifest(saved, architecture={"name": TINY, "config": config})
    loaded = load_artifact(saved)  # the manifest itself is fine
    with pytest.raises(ArtifactError) as err:
        loaded.build_model()
    _assert_one_line(err, saved, "do not fit")


def test_surplus_weights_in_file_do_not_fit(saved: Path) -> None:
    headless = {"name": TINY, "config": {"filters": 3, "head": False}}
    _edit_manifest(saved, architecture=headless)
    keras_alone = build_tiny(headless["config"])
    keras_alone.load_weights(saved / "weights.weights.h5")  # keras skips the surplus silently
    with pytest.raises(ArtifactError) as err:
        load_artifact(saved).build_model()
    _assert_one_line(err, saved, "do not fit", "holds 4 arrays, network 2")


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved: Path) -> None:
    keras.utils.set_random_seed(11)
    other = build_tiny({"filters": 3})
    before = load_artifact(saved).checksum
    assert save_artifact(other, saved, manifest(version="0.0.2")) == saved
    loaded = load_artifact(saved)
    assert loaded.checksum != before and loaded.manifest["version"] == "0.0.2"
    x = _random_input(2)
    np.testing.assert_array_equal(loaded.build_model()(x), other(x))
    assert sorted(p.name for p in saved.parent.iterdir()) == ["artifact"]


def test_failed_save_keeps_previous_artifact(saved: Path) -> None:
    class Broken:
        def save_weights(self, path: Path) -> None:
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    before = load_artifact(saved).checksum
    with pytest.raises(OSError, match="disk full"):
        save_artifact(Broken(), saved, manifest())
    assert load_artifact(saved).checksum == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["artifact"]


def test_failed_final_rename_restores_previous_artifact(
    saved: Path, tiny_model: keras.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old artifact is moved aside before the new one moves in; a failure moves it back."""
    real_replace = art.os.replace

    def flaky_replace(src: Path, dst: Path) -> None:
        if Path(src).name.startswith(".artifact.tmp-"):
            raise OSError("rename failed")
        real_replace(src, dst)

    before = load_artifact(saved).checksum
    with monkeypatch.context() as patched, pytest.raises(OSError, match="rename failed"):
        patched.setattr(art.os, "replace", flaky_replace)
        save_artifact(tiny_model, saved, manifest(version="9"))
    assert load_artifact(saved).checksum == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["artifact"]


def test_refuses_to_overwrite_a_non_artifact_directory(tmp_path: Path, tiny_model: keras.Model) -> None:
    target = tmp_path / "data"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(ArtifactError) as err:
        save_artifact(tiny_model, target, manifest())
    _assert_one_line(err, target, "refusing to overwrite")
    assert (target / "precious.txt").read_text() == "keep me"


def test_unet3d_dispatches_to_network_module_lazily(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: keras.Model
) -> None:
    """``unet3d`` goes through ``unet_config.UNet3DConfig.from_dict`` and ``network.build_unet3d``."""
    seen: list[Any] = []

    class FakeConfig:
        def __init__(self, filters: int) -> None:
            self.filters = filters

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> FakeConfig:
            return cls(**data)

    def build_unet3d(cfg: FakeConfig) -> keras.Model:
        seen.append(cfg)
        return build_tiny({"filters": cfg.filters})

    fake = types.ModuleType("lumbo_bids.model.network")
    fake.build_unet3d = build_unet3d
    monkeypatch.setitem(sys.modules, "lumbo_bids.model.network", fake)
    monkeypatch.setattr(unet_config, "UNet3DConfig", FakeConfig)
    monkeypatch.setattr(model_pkg, "network", fake, raising=False)
    unet = {"name": "unet3d", "config": {"filters": 3}}
    out = save_artifact(tiny_model, tmp_path / "u", manifest(architecture=unet))
    built = load_artifact(out).build_model()
    assert [c.filters for c in seen] == [3]
    x = _random_input(4)
    np.testing.assert_array_equal(built(x), tiny_model(x))


@pytest.mark.parametrize(
    "arch,config,shape",
    [
        ("unet3d", {"base_filters": 2, "depth": 2, "patch_size": [8, 8, 8]}, (2, 8, 8, 8, 1)),
        (
            "unet2d",
            {"base_filters": 2, "depth": 1, "dilation_layers": 1, "patch_size": [8, 8]},
            (3, 8, 8, 1),
        ),
    ],
)
def test_real_network_round_trip(tmp_path: Path, arch: str, config: dict[str, Any], shape: tuple[int, ...]) -> None:
    """The shipped architectures dispatch to ``lumbo_bids.model.network`` and round-trip."""
    network = pytest.importorskip("lumbo_bids.model.network")
    cfg_class, build = {
        "unet3d": (unet_config.UNet3DConfig, network.build_unet3d),
        "unet2d": (unet_config.UNet2DConfig, network.build_unet2d),
    }[arch]
    keras.utils.set_random_seed(21)
    model = build(cfg_class.from_dict(config))
    spec = {"name": arch, "config": config}
    out = save_artifact(model, tmp_path / arch, manifest(architecture=spec))
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    rebuilt = load_artifact(out).build_model()
    np.testing.assert_array_equal(rebuilt(x, training=False), model(x, training=False))
    _edit_manifest(out, architecture={"name": arch, "config": {**config, "colour": "blue"}})
    with pytest.raises(ArtifactError) as err:
        load_artifact(out).build_model()
    _assert_one_line(err, out, f"invalid {arch} config", "colour")


def test_compiled_model_is_saved_without_its_optimizer(tmp_path: Path, tiny_model: keras.Model) -> None:
    """A model straight out of training (compiled, optimizer built) still makes a loadable artifact."""
    tiny_model.compile(optimizer="adam", loss="mse")
    x = _random_input(7)
    tiny_model.train_on_batch(x, (x > 0).astype("float32"))  # builds the optimizer's variables
    out = save_artifact(tiny_model, tmp_path / "trained", manifest())
    rebuilt = load_artifact(out).build_model()
    np.testing.assert_array_equal(rebuilt(x, training=False), tiny_model(x, training=False))
