"""Tests of SCT's centerline models: loading (sct_h5) and the heat-map (sct_localise).

SCT's centerline models (../shared/models/sct-deepseg_sc/*_ctr.h5, licence unstated) are read
in place and never copied into the repository; the tests that need them skip without them. The
others write Keras-2.0 files synthetically, laid out as SCT's Keras session saved its models.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, IMAGE_MASK_PAIRS
from scipy import ndimage

from lumbo_bids.errors import LumboError
from lumbo_bids.model.network import build_unet2d, build_unet3d
from lumbo_bids.model.sct_h5 import ctr_config_from_h5, load_keras2_h5
from lumbo_bids.model.sct_localise import (
    CTR_ORIENTATION,
    CTR_PATCH_SIZE,
    prepare_ctr_input,
    scale_intensity,
    sct_heatmap,
    sct_heatmap_on_grid,
)
from lumbo_bids.model.unet_config import UNet2DConfig, UNet3DConfig
from lumbo_bids.preprocess import Preprocessor

CTR_FILES = {"t2": "t2_ctr.h5", "t2s": "t2s_ctr.h5", "dwi": "dwi_ctr.h5"}


def _stored_weights(path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(layer, {'kernel': array, ...})] of the layers holding weights, in file order, read with h5py only."""
    out = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        for layer in (n.decode() for n in group.attrs["layer_names"]):
            names = [n.decode() for n in group[layer].attrs["weight_names"]]
            if names:
                out.append((layer, {n.split("/")[-1].split(":")[0]: group[layer][n][()] for n in names}))
    return out


# --------------------------------------------------------------------------- real SCT files
@pytest.mark.parametrize("contrast", sorted(CTR_FILES))
def test_real_ctr_file_loads_into_build_unet2d(shared_models: Path, contrast: str) -> None:
    path = shared_models / CTR_FILES[contrast]
    assert ctr_config_from_h5(path) == UNet2DConfig.sct_ctr(contrast, dropout=0.4)  # trained with dropout 0.4
    model = load_keras2_h5(path)
    stored = _stored_weights(path)
    weighted = [layer for layer in model.layers if layer.weights]
    assert len(weighted) == len(stored)
    for layer, (name, arrays) in zip(weighted, stored):
        variables = {w.name: np.asarray(w) for w in layer.weights}
        assert set(variables) == set(arrays), (layer.name, name)
        for key, array in arrays.items():
            np.testing.assert_array_equal(variables[key], array, err_msg=f"{layer.name} <- {name}/{key}")
    assert model.count_params() == sum(a.size for _, arrays in stored for a in arrays.values())
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(2, 160, 240, 1)).astype("float32")
    y = model.predict(x, verbose=0)  # any slice size divisible by 4, not only SCT's 80x80
    assert y.shape == (2, 160, 240, 1) and np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0


# sum and number of voxels > 0.5 of the heat-maps of sub-sctTesting_T2w (prepare_ctr_input), measured
# with the loader that rebuilt each file's own Keras-2 graph layer by layer (before this loader).
@pytest.mark.parametrize("contrast,total,above", [("t2", 17356.506, 17370), ("t2s", 16702.451, 16700)])
def test_real_ctr_heatmap_equals_the_keras2_graph(shared_models: Path, contrast: str, total: float, above: int) -> None:
    img = nib.load(DS_SPINE_MINI / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.nii.gz")
    volume = prepare_ctr_input(img).get_fdata(dtype=np.float32)
    heat = sct_heatmap(load_keras2_h5(shared_models / CTR_FILES[contrast]), volume, contrast=contrast)
    assert heat.astype(np.float64).sum() == pytest.approx(total, rel=1e-4)
    assert abs(int((heat > 0.5).sum()) - above) <= 5


# --------------------------------------------------------------------------- synthetic Keras-2 files
# The marshalled Python-2.7 code of SCT's ``Lambda(lambda z: z / temperature)``, as Keras 2.0.6
# stored it in t2_ctr.h5 (bytecode |\x00\x00 \x88\x00\x00 \x1b S: z, temperature, true divide, return).
PY2_DIVIDE = (
    "c\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x13 \x01\x00s\x08\x00\x00\x00|\x00\x00\x88\x00\x00\x1bS"
    "(\x01\x00\x00\x00N(\x00\x00\x00\x00(\x01\x00\x00\x00t\x01\x00\x00\x00z(\x01\x00\x00\x00t\x0b\x00\x00\x00"
    "temperature(\x00\x00\x00\x00s\x11\x00\x00\x00nn_dilatedUnet.pyt\x08\x00\x00\x00<lambda>t\x00\x00\x00t\x00\x00\x00\x00"
)
_KERAS2_CLASS = {"TemperatureScaling": "Lambda"}
_KERAS2_ARGS = (
    "filters", "kernel_size", "strides", "padding", "dilation_rate", "activation", "use_bias",
    "axis", "momentum", "epsilon", "center", "scale", "rate", "pool_size", "size",
)  # fmt: skip


def _keras2_names(model: keras.Model) -> dict[str, str]:
    """Keras 2's automatic names: ``{class stem}_{n}``, each class numbered from 1 in creation order."""
    counters: dict[str, int] = {}
    names = {}
    for layer in model.layers:
        cls = _KERAS2_CLASS.get(type(layer).__name__, type(layer).__name__)
        stem = {"InputLayer": "input", "Lambda": "lambda"}.get(cls) or "".join(
            f"_{c.lower()}" if c.isupper() and i and not cls[i - 1].isdigit() else c.lower() for i, c in enumerate(cls)
        )
        counters[stem] = counters.get(stem, 0) + 1
        names[layer.name] = f"{stem}_{counters[stem]}"
    return names


def _keras2_config(layer: keras.layers.Layer, name: str, channels_first: bool, spatial: tuple[int, ...]) -> dict:
    """Keras-2.0.6 config of one of our layers, as SCT's session would have saved it."""
    cls = type(layer).__name__
    if cls == "InputLayer":
        channels = layer.batch_shape[-1]
        shape = [None, channels, *spatial] if channels_first else [None, *spatial, channels]
        return {"name": name, "batch_input_shape": shape, "dtype": "float32", "sparse": False}
    if cls == "TemperatureScaling":
        function = [PY2_DIVIDE, None, [layer.temperature]]
        return {"name": name, "function": function, "function_type": "lambda", "arguments": {}, "output_shape": None}
    k3 = layer.get_config()
    out = {"name": name, "trainable": True}
    out.update({k: list(v) if isinstance(v, tuple) else v for k, v in k3.items() if k in _KERAS2_ARGS})
    if "data_format" in k3:
        out["data_format"] = "channels_first" if channels_first else "channels_last"
    if "axis" in out and channels_first:
        out["axis"] = 1
    return out


def _write_keras2(model: keras.Model, path: Path, channels_first: bool = False, spatial=(80, 80)) -> Path:
    """Save ``model`` as Keras 2.0.6 saved SCT's models (``model_config`` + ``model_weights``)."""
    names = _keras2_names(model)
    layers = []
    for k3 in model.get_config()["layers"]:
        inbound = []
        for node in k3["inbound_nodes"]:
            args = node["args"][0] if isinstance(node["args"][0], list) else [node["args"][0]]
            inbound.append([[names[a["config"]["keras_history"][0]], 0, 0, {}] for a in args])
        layer = model.get_layer(k3["name"])
        cls = _KERAS2_CLASS.get(type(layer).__name__, type(layer).__name__)
        config = _keras2_config(layer, names[layer.name], channels_first, spatial)
        layers.append({"class_name": cls, "name": names[layer.name], "config": config, "inbound_nodes": inbound})
    ends = {"input_layers": [["input_1", 0, 0]], "output_layers": [[names[model.layers[-1].name], 0, 0]]}
    config = {"class_name": "Model", "config": {"name": "model_1", "layers": layers, **ends}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.6"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [names[layer.name].encode() for layer in model.layers]
        for layer in model.layers:
            sub = group.create_group(names[layer.name])
            sub.attrs["weight_names"] = np.array([f"{names[layer.name]}/{w.name}:0".encode() for w in layer.weights], "S")
            for w in layer.weights:
                sub.create_dataset(f"{names[layer.name]}/{w.name}:0", data=np.asarray(w))
    return path


def _random_unet2d(cfg: UNet2DConfig, seed: int) -> keras.Model:
    """``build_unet2d(cfg)`` with random weights and non-trivial batch-norm statistics."""
    keras.utils.set_random_seed(seed)
    model = build_unet2d(cfg)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
    head = model.get_layer("head_conv")
    head.kernel.assign(head.kernel * 50.0)  # logits of a few units: the sigmoid is not flat at 0.5
    return model


TINY_CTR = UNet2DConfig(base_filters=4, dilation_layers=3, dropout=0.4, temperature=2.5)


@pytest.mark.parametrize("channels_first", [False, True])
def test_keras2_ctr_file_loads_with_identical_predictions(tmp_path: Path, channels_first: bool) -> None:
    source = _random_unet2d(TINY_CTR, seed=3)
    path = _write_keras2(source, tmp_path / "tiny_ctr.h5", channels_first=channels_first)
    assert ctr_config_from_h5(path) == TINY_CTR
    loaded = load_keras2_h5(path)
    assert loaded.input_shape == (None, None, None, 1)
    x = np.random.default_rng(4).normal(0.0, 1.5, size=(2, 80, 80, 1)).astype("float32")
    expected = np.asarray(source(x, training=False))
    assert expected.std() > 0.01  # the comparison is not between two constant maps
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, atol=1e-6)
    cfg = UNet2DConfig(base_filters=2, depth=3, dilation_layers=1, batch_norm=False, patch_size=(64, 48))
    free_input = _write_keras2(_random_unet2d(cfg, seed=5), tmp_path / "deep_ctr.h5", spatial=(64, 48))
    assert ctr_config_from_h5(free_input) == cfg


# --------------------------------------------------------------------------- refused files
def _raises_one_line(path: Path, match: str) -> None:
    with pytest.raises(LumboError, match=match) as err:
        load_keras2_h5(path)
    assert "\n" not in str(err.value) and path.name in str(err.value)


def test_missing_non_hdf5_and_truncated_files_raise_naming_the_file(tmp_path: Path) -> None:
    data = _write_keras2(_random_unet2d(TINY_CTR, seed=6), tmp_path / "tiny_ctr.h5").read_bytes()
    (tmp_path / "truncated_ctr.h5").write_bytes(data[: len(data) // 2])
    _raises_one_line(tmp_path / "truncated_ctr.h5", "truncated|not a readable HDF5")
    (tmp_path / "garbage_ctr.h5").write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 8)
    _raises_one_line(tmp_path / "garbage_ctr.h5", "not a readable HDF5")
    (tmp_path / "readme.h5").write_text("hello")
    _raises_one_line(tmp_path / "readme.h5", "not a readable HDF5")
    _raises_one_line(tmp_path / "absent_ctr.h5", "no such file")
    with pytest.raises(LumboError, match="absent_ctr.h5"):
        ctr_config_from_h5(tmp_path / "absent_ctr.h5")


def _edited(tmp_path: Path, name: str, edit) -> Path:
    """A synthetic ctr file whose Keras-2 config (``f.attrs``, decoded) ``edit`` changes in place."""
    path = _write_keras2(_random_unet2d(TINY_CTR, seed=7), tmp_path / name)
    with h5py.File(path, "a") as f:
        attrs = {"model_config": json.loads(f.attrs["model_config"]), "keras_version": f.attrs["keras_version"]}
        edit(attrs)
        for key in ("model_config", "keras_version"):
            if key in attrs:
                f.attrs[key] = json.dumps(attrs[key]).encode() if key == "model_config" else attrs[key]
            else:
                del f.attrs[key]
    return path


def _layer(attrs: dict, name: str) -> dict:
    return next(la for la in attrs["model_config"]["config"]["layers"] if la["name"] == name)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda a: a.pop("model_config"), "missing HDF5 attribute 'model_config'"),
        (lambda a: a.update(keras_version=b"3.3.3"), "not a deepseg_sc .* Keras 3.3.3, not Keras 2"),
        (lambda a: a["model_config"].update(class_name="Sequential"), "not a deepseg_sc .* model class 'Sequential'"),
        (lambda a: _layer(a, "conv2d_2").update(class_name="LSTM"), r"not a deepseg_sc .* layer classes \['LSTM'\]"),
        (lambda a: _layer(a, "lambda_1").update(class_name="Activation"), r"1 InputLayer, 0 Lambda, 2 MaxPooling2D"),
        (
            lambda a: _layer(a, "conv2d_2")["config"].update(dilation_rate=[1, 1]),
            r"layer 'conv2d_2' \(Conv2D\) has dilation_rate=\(1, 1\), expected \(2, 2\)",
        ),
        (
            lambda a: _layer(a, "conv2d_3")["config"].update(kernel_size=[5, 5]),
            r"layer 'conv2d_3' \(Conv2D\) has kernel_size=\(5, 5\), expected \(3, 3\)",
        ),
        (
            lambda a: _layer(a, "concatenate_1")["inbound_nodes"][0].reverse(),
            r"layer 'concatenate_1' takes \['dropout_4', 'conv2d_transpose_1'\]",
        ),
        (
            lambda a: _layer(a, "lambda_1")["config"]["function"].__setitem__(0, PY2_DIVIDE.replace("\x1bS", "\x14S")),
            r"layer 'lambda_1': unsupported Lambda",  # lambda z: z * temperature
        ),
        (lambda a: _layer(a, "lambda_1")["config"]["function"].__setitem__(2, [-1.0]), "unsupported Lambda"),
    ],
    ids=[
        "no-config",
        "keras3",
        "sequential",
        "lstm",
        "no-lambda",
        "dilation",
        "kernel",
        "wiring",
        "lambda-multiply",
        "temperature",
    ],
)
def test_files_that_are_not_sct_ctr_unets_are_refused(tmp_path: Path, edit, match: str) -> None:
    _raises_one_line(_edited(tmp_path, "edited_ctr.h5", edit), match)


def test_weight_shape_mismatch_names_file_and_layer(tmp_path: Path) -> None:
    path = _write_keras2(_random_unet2d(TINY_CTR, seed=8), tmp_path / "badshape_ctr.h5")
    with h5py.File(path, "a") as f:
        group = f["model_weights/conv2d_3/conv2d_3"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", data=np.zeros((3, 3, 4, 9), "float32"))
    _raises_one_line(path, r"layer 'conv2d_3': weight 'kernel' has shape \(3, 3, 4, 9\) in the file, \(3, 3, 4, 8\) expected")


def test_3d_unet_file_is_refused(tmp_path: Path) -> None:
    """SCT's 3D segmentation U-Net (here ours, saved channels-first in Keras-2 layout) is not a ctr model."""
    model = build_unet3d(UNet3DConfig(base_filters=2, patch_size=(16, 16, 16)))
    path = _write_keras2(model, tmp_path / "t2_sc_3D.h5", channels_first=True, spatial=(48, 48, 48))
    _raises_one_line(path, r"not a deepseg_sc 2D centerline U-Net .*Conv3D")


# --------------------------------------------------------------------------- heat-map
def test_scale_intensity_matches_sct_definition() -> None:
    data = np.random.default_rng(4).gamma(2.0, 100.0, size=(30, 20, 10)).astype("float32")
    p2, p98 = np.percentile(data, (2, 98))
    out = scale_intensity(data)
    np.testing.assert_allclose(out, (np.clip(data, p2, p98) - p2) / (p98 - p2) * 255.0, rtol=1e-5, atol=1e-3)
    assert out.min() == 0.0 and out.max() == pytest.approx(255.0)
    assert np.all(scale_intensity(np.full((4, 4, 4), 7.0)) == 0.0)


def test_prepare_ctr_input_orientation_and_resolution() -> None:
    img = nib.load(DS_SPINE_MINI / "sub-sctTesting" / "anat" / "sub-sctTesting_T2w.nii.gz")  # PSR, 1 mm
    out = prepare_ctr_input(img)
    assert nib.aff2axcodes(out.affine) == CTR_ORIENTATION == ("L", "A", "S")  # SCT's "RPI"
    np.testing.assert_allclose(out.header.get_zooms()[:3], (0.5, 0.5, 1.0), atol=1e-5)
    assert out.shape == (104, 120, 55)  # R-L 52 mm, A-P 60 mm, S-I 55 mm
    centre_in = img.affine @ np.append((np.array(img.shape) - 1) / 2, 1)
    centre_out = out.affine @ np.append((np.array(out.shape) - 1) / 2, 1)
    np.testing.assert_allclose(centre_out[:3], centre_in[:3], atol=0.6)  # same field of view


def test_heatmap_shape_range_and_cropped_region(shared_models: Path) -> None:
    model = load_keras2_h5(shared_models / "t2_ctr.h5")
    volume = np.random.default_rng(5).gamma(2.0, 50.0, size=(50, 170, 3)).astype("float32")
    heat = sct_heatmap(model, volume, recentre=True)
    assert heat.shape == volume.shape and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert np.all(heat[:, 2 * CTR_PATCH_SIZE[1] :] == 0.0)  # SCT crops A-P to a multiple of 80
    with pytest.raises(ValueError, match="contrast"):
        sct_heatmap(model, volume, contrast="flair")
    with pytest.raises(ValueError, match="3D"):
        sct_heatmap(model, volume[..., 0])


def _sigmoid_probe(input_shape: tuple[int | None, int | None, int]) -> keras.Model:
    """A parameter-free real Keras model, ``sigmoid(input)``: exposes what sct_heatmap feeds the network."""
    return keras.Sequential([keras.Input(input_shape), keras.layers.Activation("sigmoid")])


@pytest.mark.parametrize("contrast,mean,std", [("t2", 51.1417, 57.4408), ("t2s", 68.8591, 71.4659)])
def test_heatmap_feeds_sct_padded_scaled_standardised_blocks(contrast: str, mean: float, std: float) -> None:
    volume = np.random.default_rng(6).gamma(2.0, 80.0, size=(50, 170, 4)).astype("float32")
    heat = sct_heatmap(_sigmoid_probe((80, 80, 1)), volume, contrast=contrast, recentre=False)
    # SCT heatmap(): crop A-P to 160 (2 x 80), zero-pad R-L 50 -> 80, scale the whole padded volume
    padded = np.pad(volume[:, :160], ((0, 30), (0, 0), (0, 0)))
    expected = 1.0 / (1.0 + np.exp(-(scale_intensity(padded) - mean) / std))
    np.testing.assert_allclose(heat[:, :160], expected[:50], rtol=1e-5, atol=1e-6)
    assert np.all(heat[:, 160:] == 0.0)


def test_heatmap_recentres_one_block_on_the_detected_cord() -> None:
    volume = np.zeros((200, 200, 2), "float32")
    xx, yy = np.mgrid[:200, :200]
    volume[(xx - 130) ** 2 + (yy - 70) ** 2 <= 30**2] = 1000.0  # a bright 'cord' centred at (130, 70)
    probe = _sigmoid_probe((None, None, 1))  # free input size -> 80x80 blocks
    grid = sct_heatmap(probe, volume, recentre=False)
    heat = sct_heatmap(probe, volume, recentre=True)
    # SCT _find_crop_start_end: start = int(centre) - 80 // 2 + 1 -> block [91, 171) x [31, 111)
    inside = np.zeros((200, 200), bool)
    inside[91:171, 31:111] = True
    for z in range(2):
        np.testing.assert_allclose(heat[inside, z], grid[inside, z], rtol=1e-6)
        assert np.all(heat[~inside, z] == 0.0) and np.any(grid[~inside, z] > 0.2)


def _peak(slice_heat: np.ndarray) -> np.ndarray:
    """Argmax of a heat-map slice; ties (the sigmoid saturates at exactly 1.0) -> their centroid."""
    return np.argwhere(slice_heat >= slice_heat.max()).mean(axis=0)


def _errors_mm(heat: np.ndarray, cord: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Per slice containing the mask: distance (mm) from the heat-map peak to the mask centre."""
    errors = []
    for z in np.flatnonzero(cord.any(axis=(0, 1))):
        centre = np.array(ndimage.center_of_mass(cord[:, :, z]))
        errors.append(np.linalg.norm((_peak(heat[:, :, z]) - centre) * voxel_mm))
    return np.array(errors)


def _peak_errors_mm(model: keras.Model, image: Path, mask: Path) -> np.ndarray:
    """:func:`_errors_mm` of the heat-map of ``image`` prepared as SCT does (0.5 mm in-plane)."""
    volume = prepare_ctr_input(nib.load(image)).get_fdata(dtype=np.float32)
    cord = prepare_ctr_input(nib.load(mask), order=1).get_fdata() > 0.5
    return _errors_mm(sct_heatmap(model, volume, contrast="t2"), cord, 0.5)


def _pair(name: str) -> tuple[Path, Path]:
    return next((img, mask) for img, mask in IMAGE_MASK_PAIRS if img.name == name)


# Measured with t2_ctr.h5 (slices with mask; median / max error; fraction < 3 mm):
#   sub-sctTesting_T2w: 55 slices, 0.21 / 0.45 mm, 1.00;  sub-unf01_T2w: 16 slices, 0.51 / 0.79 mm, 1.00.
# (np.argmax itself lands 6-7 mm off: it returns the first corner of the saturated plateau.)
@pytest.mark.parametrize("image", ["sub-sctTesting_T2w.nii.gz", "sub-unf01_T2w.nii.gz"])
def test_t2_ctr_heatmap_is_centred_on_the_cord(shared_models: Path, image: str) -> None:
    errors = _peak_errors_mm(load_keras2_h5(shared_models / "t2_ctr.h5"), *_pair(image))
    assert len(errors) >= 10
    assert np.mean(errors < 3.0) >= 0.9, errors
    assert np.median(errors) < 1.5, errors


def test_t2_ctr_heatmap_misses_the_cord_on_t1w(shared_models: Path) -> None:
    """Negative control: the T2 model on a T1w image (inverted CSF/cord contrast) does not localise."""
    errors = _peak_errors_mm(load_keras2_h5(shared_models / "t2_ctr.h5"), *_pair("sub-sctTesting_T1w.nii.gz"))
    assert np.mean(errors < 3.0) < 0.2, errors  # measured: 0.00 (median error 24 mm)


# --------------------------------------------------------------------------- resolution
def test_heatmap_on_grid_checks_orientation_and_passes_half_mm_through() -> None:
    volume = np.random.default_rng(9).gamma(2.0, 80.0, size=(50, 170, 4)).astype("float32")
    probe = _sigmoid_probe((80, 80, 1))
    rpi_half_mm = np.diag([-0.5, 0.5, 1.0, 1.0])  # nibabel axes L, A, S = SCT's RPI
    np.testing.assert_array_equal(sct_heatmap_on_grid(probe, volume, rpi_half_mm), sct_heatmap(probe, volume))
    with pytest.raises(LumboError, match="need an RPI volume .*got axes RAS"):
        sct_heatmap_on_grid(probe, volume, np.diag([0.5, 0.5, 1.0, 1.0]))


def test_heatmap_on_grid_brings_a_1mm_volume_to_half_mm(shared_models: Path) -> None:
    """The participant grid follows the segmentation model's resolution (here 1 mm): fed directly,
    the t2 model misses the cord; sct_heatmap_on_grid runs it at 0.5 mm and finds it."""
    image, mask = (nib.load(p) for p in _pair("sub-sctTesting_T2w.nii.gz"))
    volume, cord, geometry = Preprocessor(resolution=1.0).resample(
        image.get_fdata(dtype=np.float32), image.affine, mask.get_fdata()
    )
    cord = cord > 0
    model = load_keras2_h5(shared_models / "t2_ctr.h5")
    heat = sct_heatmap_on_grid(model, volume, geometry.resampled.affine)
    assert heat.shape == volume.shape and heat.dtype == np.float32 and 0.0 <= heat.min() <= heat.max() <= 1.0
    errors = _errors_mm(heat, cord, 1.0)
    assert len(errors) >= 10 and np.mean(errors < 3.0) >= 0.9 and np.median(errors) < 1.5, errors  # measured 0.23 mm
    direct = _errors_mm(sct_heatmap(model, volume), cord, 1.0)
    assert np.mean(direct < 3.0) < 0.2, direct  # measured 0.00 (median error 17.8 mm)
