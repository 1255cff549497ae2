"""Tests of lumbo_bids.model.network: configs, SCT architectures, shapes, training, freezing."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lumbo_bids.model.network import (
    TemperatureScaling,
    build_unet2d,
    build_unet3d,
    encoder_layer_names,
    freeze_depth,
)
from lumbo_bids.model.unet_config import UNet2DConfig, UNet3DConfig

TINY_3D = UNet3DConfig(base_filters=4, depth=3, patch_size=(16, 16, 16))
TINY_2D = UNet2DConfig(base_filters=4, depth=2, dilation_layers=2, patch_size=(32, 32))


def _layers_of(model: keras.Model, cls: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, cls)]


def _sct_3d_param_count(base: int, depth: int, in_ch: int = 1, n_labels: int = 1) -> int:
    """Parameters of SCT's nn_architecture_seg_3d, counted from its recipe (not from Keras)."""

    def conv(c_in: int, c_out: int, k: int = 3) -> int:
        return k**3 * c_in * c_out + c_out

    total, bn_channels, c_in, skips = 0, 0, in_ch, []
    for level in range(depth):
        f = base * 2**level
        total += conv(c_in, f) + conv(f, 2 * f)
        bn_channels += 3 * f
        c_in = 2 * f
        skips.append(2 * f)
    for level in range(depth - 2, -1, -1):
        f = skips[level]
        total += conv(c_in + f, f) + conv(f, f)
        bn_channels += 2 * f
        c_in = f
    return total + conv(c_in, n_labels, 1) + 4 * bn_channels


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "cfg",
    [
        UNet3DConfig(),
        TINY_3D,
        UNet3DConfig(upsampling="transpose", dropout=0.1),
        UNet2DConfig(),
        UNet2DConfig.sct_ctr("t2s", dropout=0.4),
        TINY_2D,
    ],
)
def test_config_json_round_trip(cfg) -> None:
    data = json.loads(json.dumps(cfg.to_dict()))
    assert type(cfg).from_dict(data) == cfg
    assert isinstance(data["patch_size"], list)


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown config keys"):
        UNet3DConfig.from_dict({**UNet3DConfig().to_dict(), "filters": 3})
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet3DConfig(patch_size=(48, 48, 30))
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet2DConfig(patch_size=(80, 82))
    with pytest.raises(ValueError, match="dropout"):
        UNet2DConfig(dropout=1.0)
    with pytest.raises(ValueError, match="upsampling"):
        UNet3DConfig(upsampling="bilinear")
    with pytest.raises(ValueError, match="unknown SCT contrast"):
        UNet2DConfig.sct_ctr("flair")


def test_sct_ctr_presets_match_sct_core() -> None:
    # spinalcordtoolbox/deepseg_sc/core.py dct_params_ctr
    assert (UNet2DConfig.sct_ctr("t2").base_filters, UNet2DConfig.sct_ctr("t2").dilation_layers) == (16, 2)
    assert (UNet2DConfig.sct_ctr("t2s").base_filters, UNet2DConfig.sct_ctr("t2s").dilation_layers) == (8, 3)
    assert (UNet2DConfig.sct_ctr("t1").base_filters, UNet2DConfig.sct_ctr("t1").dilation_layers) == (24, 3)
    assert (UNet2DConfig.sct_ctr("dwi").base_filters, UNet2DConfig.sct_ctr("dwi").dilation_layers) == (8, 2)


# --------------------------------------------------------------------------- 3D architecture
def test_unet3d_default_reproduces_sct_structure() -> None:
    model = build_unet3d()
    convs = _layers_of(model, keras.layers.Conv3D)
    assert [c.filters for c in convs] == [16, 32, 32, 64, 64, 128, 64, 64, 32, 32, 1]
    assert [c.kernel_size for c in convs] == [(3, 3, 3)] * 10 + [(1, 1, 1)]
    assert all(c.padding == "same" for c in convs[:-1])
    assert len(_layers_of(model, keras.layers.BatchNormalization)) == 10
    assert len(_layers_of(model, keras.layers.MaxPooling3D)) == 2
    assert [u.size for u in _layers_of(model, keras.layers.UpSampling3D)] == [(2, 2, 2)] * 2
    assert not _layers_of(model, keras.layers.Dropout)
    concat_channels = [layer.output.shape[-1] for layer in _layers_of(model, keras.layers.Concatenate)]
    assert concat_channels == [128 + 64, 64 + 32]  # [upsampled, skip]
    acts = [a.activation.__name__ for a in _layers_of(model, keras.layers.Activation)]
    assert acts == ["relu"] * 10 + ["sigmoid"]
    assert model.input_shape == (None, None, None, None, 1)
    assert model.count_params() == 984_609 == _sct_3d_param_count(16, 3)
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 1_056


@pytest.mark.parametrize("base,depth", [(4, 3), (8, 2), (2, 4)])
def test_unet3d_param_count_follows_sct_recipe(base: int, depth: int) -> None:
    model = build_unet3d(UNet3DConfig(base_filters=base, depth=depth, patch_size=(16, 16, 16)))
    assert model.count_params() == _sct_3d_param_count(base, depth)


@pytest.mark.parametrize("spatial", [(48, 48, 48), (32, 48, 16), (24, 8, 40)])
def test_unet3d_output_shape_and_range(spatial: tuple[int, int, int]) -> None:
    model = build_unet3d(TINY_3D)
    x = np.random.default_rng(0).normal(scale=50.0, size=(1, *spatial, 1)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (1, *spatial, 1)
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0


def test_unet3d_transpose_upsampling_and_labels() -> None:
    model = build_unet3d(UNet3DConfig(base_filters=2, n_labels=2, upsampling="transpose", dropout=0.2, patch_size=(16, 16, 16)))
    assert len(_layers_of(model, keras.layers.Conv3DTranspose)) == 2
    assert len(_layers_of(model, keras.layers.Dropout)) == 10
    assert model(np.zeros((2, 16, 8, 12, 1), "float32")).shape == (2, 16, 8, 12, 2)


@pytest.mark.parametrize("context,reach", [("2d", 0), ("2.5d", 1), ("3d", None)])
def test_unet3d_slice_context_bounds_what_a_slice_sees(context: str, reach: int | None) -> None:
    """A change on one axial slice moves the output of exactly the slices the context allows:
    that slice alone ("2d"), its neighbours too ("2.5d": only the first kernel spans slices),
    far beyond ("3d")."""
    model = build_unet3d(UNet3DConfig(base_filters=4, depth=3, slice_context=context, patch_size=(16, 16, 16)))
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 1)).astype("float32")
    changed = x.copy()
    changed[0, :, :, 8] += 3.0
    diff = np.abs(np.asarray(model(changed, training=False)) - np.asarray(model(x, training=False)))
    moved = np.flatnonzero(diff.max(axis=(0, 1, 2, 4)) > 1e-6)
    if reach is None:
        assert moved.min() < 6 and moved.max() > 10
    else:
        assert moved.tolist() == list(range(8 - reach, 9 + reach))
    assert model.output_shape == (None, None, None, None, 1)


def test_unet3d_slice_context_config() -> None:
    assert UNet3DConfig.from_dict({k: v for k, v in TINY_3D.to_dict().items() if k != "slice_context"}) == TINY_3D
    flat = UNet3DConfig(base_filters=4, slice_context="2d", patch_size=(16, 16, 16))
    assert UNet3DConfig.from_dict(json.loads(json.dumps(flat.to_dict()))) == flat
    assert (flat.kernel(), flat.kernel(first=True), flat.pool) == ((3, 3, 1), (3, 3, 1), (2, 2, 1))
    assert UNet3DConfig(slice_context="2.5d").kernel(first=True) == (3, 3, 3)
    assert build_unet3d(flat).count_params() < build_unet3d(TINY_3D).count_params() / 2
    with pytest.raises(ValueError, match="slice_context"):
        UNet3DConfig(slice_context="4d")


# --------------------------------------------------------------------------- 2D architecture
def test_unet2d_t2_reproduces_sct_ctr_structure() -> None:
    model = build_unet2d(UNet2DConfig.sct_ctr("t2"))
    convs = _layers_of(model, keras.layers.Conv2D)
    plain = [c for c in convs if not isinstance(c, keras.layers.Conv2DTranspose)]
    assert [c.filters for c in plain] == [16, 16, 32, 32, 64, 64, 32, 32, 16, 16, 1]
    assert [c.dilation_rate[0] for c in plain] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1]
    ups = _layers_of(model, keras.layers.Conv2DTranspose)
    assert [(u.filters, u.kernel_size, u.strides) for u in ups] == [(32, (2, 2), (2, 2)), (16, (2, 2), (2, 2))]
    assert len(_layers_of(model, TemperatureScaling)) == 1
    assert model.count_params() == 118_033  # = stored weights of SCT's t2_ctr.h5
    t2s = build_unet2d(UNet2DConfig.sct_ctr("t2s"))
    dilations = [
        c.dilation_rate[0] for c in _layers_of(t2s, keras.layers.Conv2D) if not isinstance(c, keras.layers.Conv2DTranspose)
    ]
    assert dilations == [1, 2, 1, 2, 1, 2, 4, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("spatial", [(80, 80), (64, 96), (160, 240)])
def test_unet2d_output_shape_and_range(spatial: tuple[int, int]) -> None:
    model = build_unet2d(TINY_2D)
    x = np.random.default_rng(1).normal(scale=50.0, size=(2, *spatial, 1)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, *spatial, 1)
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0


def test_temperature_scaling_divides_logits() -> None:
    layer = TemperatureScaling(4.0)
    np.testing.assert_allclose(np.asarray(layer(np.array([[8.0, -2.0]], "float32"))), [[2.0, -0.5]])
    assert TemperatureScaling.from_config(layer.get_config()).temperature == 4.0
    with pytest.raises(ValueError):
        TemperatureScaling(0.0)


# --------------------------------------------------------------------------- training
def _soft_dice_loss(y_true, y_pred):
    inter = keras.ops.sum(y_true * y_pred)
    return 1.0 - (2.0 * inter + 1.0) / (keras.ops.sum(y_true) + keras.ops.sum(y_pred) + 1.0)


def _cubes_in_noise(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.5, size=(n, size, size, size, 1)).astype("float32")
    y = np.zeros_like(x)
    for i in range(n):
        a, b, c = rng.integers(2, size - 8, size=3)
        y[i, a : a + 6, b : b + 6, c : c + 6] = 1.0
    return x + 1.5 * y, y


def test_few_training_steps_reduce_dice_loss() -> None:
    keras.utils.set_random_seed(0)
    model = build_unet3d(UNet3DConfig(base_filters=4, depth=2, patch_size=(16, 16, 16)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_soft_dice_loss)
    x, y = _cubes_in_noise(8, 16, seed=0)
    # training-mode loss (batch statistics): the moving BN averages lag behind after 30 steps
    before = float(_soft_dice_loss(y, model(x, training=True)))
    history = model.fit(x, y, batch_size=4, epochs=15, verbose=0).history["loss"]
    after = float(_soft_dice_loss(y, model(x, training=True)))
    assert after < before - 0.2, (before, after, history)
    assert history[-1] < history[0]


# --------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("builder,cfg", [(build_unet3d, TINY_3D), (build_unet2d, TINY_2D)])
def test_encoder_layer_names_are_the_contracting_path(builder, cfg) -> None:
    model = builder(cfg)
    names = [layer.name for layer in model.layers]
    encoder = encoder_layer_names(model)
    first_up = min(i for i, n in enumerate(names) if n.endswith("_up"))
    assert encoder == names[1:first_up]  # everything between the input and the first up-sampling


@pytest.mark.parametrize("builder,cfg", [(build_unet3d, TINY_3D), (build_unet2d, TINY_2D)])
def test_freeze_modes(builder, cfg) -> None:
    model = builder(cfg)
    encoder = set(encoder_layer_names(model))

    frozen = freeze_depth(model, "encoder")
    assert set(frozen) == encoder
    assert all(layer.trainable == (layer.name not in encoder) for layer in model.layers)
    trainable_paths = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable_paths and not trainable_paths & encoder

    freeze_depth(model, "all_but_last")
    assert sorted(w.path for w in model.trainable_weights) == ["head_conv/bias", "head_conv/kernel"]

    assert freeze_depth(model, "none") == []
    assert len(model.trainable_weights) == len([w for w in model.weights if "moving" not in w.path])

    with pytest.raises(ValueError, match="freeze mode"):
        freeze_depth(model, "decoder")  # type: ignore[arg-type]


def test_frozen_encoder_weights_do_not_change_in_training() -> None:
    keras.utils.set_random_seed(1)
    model = build_unet3d(UNet3DConfig(base_filters=2, depth=2, patch_size=(8, 8, 8)))
    freeze_depth(model, "encoder")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_soft_dice_loss)
    before = {w.path: np.array(w) for w in model.weights}
    x, y = _cubes_in_noise(4, 16, seed=1)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    after = {w.path: np.array(w) for w in model.weights}
    changed = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    encoder = set(encoder_layer_names(model))
    assert not {p.split("/")[0] for p in changed} & encoder
    assert {"head_conv/kernel", "dec0_conv1/kernel"} <= changed


def test_keras_file_round_trip(tmp_path) -> None:
    model = build_unet2d(TINY_2D)
    path = tmp_path / "ctr.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).normal(size=(1, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    assert isinstance(loaded.get_layer("head_temperature"), TemperatureScaling)
