"""Tests of the Keras-2 HDF5 reader (sct_h5) and SCT's ctr heat-map (sct_localise).

SCT's centerline models (../shared/models/sct-deepseg_sc/*_ctr.h5, licence
unstated) are read in place and never copied into the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import keras
import nibabel as nib
import numpy as np
import pytest
from conftest import DS_SPINE_MINI, IMAGE_MASK_PAIRS
from scipy import ndimage

from lumbo_bids.model.network import (
    UNet2DConfig,
    UNet3DConfig,
    build_unet2d,
    build_unet3d,
    sct_layer_name_map,
)
from lumbo_bids.model.sct_h5 import (
    describe_keras2_h5,
    is_keras2_h5,
    load_keras2_h5,
    load_keras2_weights,
)
from lumbo_bids.model.sct_localise import (
    CTR_ORIENTATION,
    CTR_PATCH_SIZE,
    prepare_ctr_input,
    scale_intensity,
    sct_heatmap,
)

CTR_FILES = {"t2": "t2_ctr.h5", "t2s": "t2s_ctr.h5", "dwi": "dwi_ctr.h5"}


def _stored_layer_names(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return [n.decode() for n in f["model_weights"].attrs["layer_names"]]


def _stored_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {'kernel': array, ...}} read with h5py only."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        for layer in _stored_layer_names(path):
            names = [n.decode() for n in group[layer].attrs["weight_names"]]
            if names:
                out[layer] = {n.split("/")[-1].split(":")[0]: group[layer][n][()] for n in names}
    return out


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    return dst


# --------------------------------------------------------------------------- real SCT files
@pytest.mark.parametrize("contrast", sorted(CTR_FILES))
def test_rebuilt_model_matches_stored_layers_and_weights(shared_models: Path, contrast: str) -> None:
    path = shared_models / CTR_FILES[contrast]
    model = load_keras2_h5(path)
    assert [layer.name for layer in model.layers] == _stored_layer_names(path)
    stored = _stored_weights(path)
    rebuilt = {layer.name: layer for layer in model.layers if layer.weights}
    assert set(rebuilt) == set(stored)
    for name, arrays in stored.items():
        variables = {w.name: np.asarray(w) for w in rebuilt[name].weights}
        assert set(variables) == set(arrays), name
        for wname, array in arrays.items():
            assert variables[wname].shape == array.shape, (name, wname)
            np.testing.assert_array_equal(variables[wname], array, err_msg=f"{name}/{wname}")
    assert model.count_params() == sum(a.size for arrays in stored.values() for a in arrays.values())
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(3, 80, 80, 1)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (3, 80, 80, 1)
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("contrast", sorted(CTR_FILES))
def test_build_unet2d_is_sct_ctr_architecture(shared_models: Path, contrast: str) -> None:
    """Our builder + SCT-name map + the file's weights == the model rebuilt from the file's config."""
    path = shared_models / CTR_FILES[contrast]
    reference = load_keras2_h5(path)
    ours = build_unet2d(UNet2DConfig.sct_ctr(contrast, dropout=0.4))  # the files were trained with 0.4
    mapping = sct_layer_name_map(ours)
    assert list(mapping.values()) == [layer.name for layer in reference.layers]
    assert [type(a).__name__ for a in ours.layers[1:]] == [type(b).__name__ for b in reference.layers[1:]]
    load_keras2_weights(ours, path, mapping)
    x = np.random.default_rng(1).normal(0.0, 1.5, size=(2, 80, 80, 1)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
    inference = build_unet2d(UNet2DConfig.sct_ctr(contrast))  # SCT's inference build: no Dropout
    load_keras2_weights(inference, path, match="order")
    np.testing.assert_allclose(inference.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


def test_describe_and_detect(shared_models: Path, tmp_path: Path) -> None:
    path = shared_models / "t2_ctr.h5"
    info = describe_keras2_h5(path)
    assert info["keras_version"] == "2.0.6" and info["backend"] == "tensorflow"
    assert info["input_shape"] == [None, 80, 80, 1]
    assert [layer["name"] for layer in info["layers"]] == _stored_layer_names(path)
    assert info["layers"][1] == {"name": "conv2d_1", "class_name": "Conv2D", "weights": {"kernel": (3, 3, 1, 16), "bias": (16,)}}
    assert info["output_layers"] == ["activation_11"]
    assert info["n_params"] == 118_033
    assert is_keras2_h5(path)
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file")
    assert not is_keras2_h5(text)


def test_free_input_shape_runs_whole_slices(shared_models: Path) -> None:
    path = shared_models / "t2_ctr.h5"
    fixed, free = load_keras2_h5(path), load_keras2_h5(path, input_shape=(None, None, 1))
    assert free.input_shape == (None, None, None, 1)
    x = np.random.default_rng(2).normal(size=(1, 80, 80, 1)).astype("float32")
    np.testing.assert_allclose(free.predict(x, verbose=0), fixed.predict(x, verbose=0), atol=1e-6)
    assert free.predict(np.zeros((1, 160, 240, 1), "float32"), verbose=0).shape == (1, 160, 240, 1)
    with pytest.raises(ValueError, match="input_shape"):
        load_keras2_h5(path, input_shape=(None, None, 3))


# --------------------------------------------------------------------------- broken files
def test_truncated_and_non_hdf5_files_raise_naming_the_file(shared_models: Path, tmp_path: Path) -> None:
    data = (shared_models / "t2_ctr.h5").read_bytes()
    truncated = tmp_path / "truncated_ctr.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated_ctr.h5"):
        load_keras2_h5(truncated)
    garbage = tmp_path / "garbage_ctr.h5"
    garbage.write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="garbage_ctr.h5"):
        load_keras2_h5(garbage)
    text = tmp_path / "readme.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="readme.h5"):
        describe_keras2_h5(text)
    with pytest.raises(ValueError, match="absent.h5"):
        load_keras2_h5(tmp_path / "absent.h5")


def test_missing_attribute_raises(shared_models: Path, tmp_path: Path) -> None:
    path = _writable_copy(shared_models / "dwi_ctr.h5", tmp_path / "noconfig.h5")
    with h5py.File(path, "a") as f:
        del f.attrs["model_config"]
    with pytest.raises(ValueError, match=r"noconfig.h5.*model_config"):
        load_keras2_h5(path)


def test_weight_shape_mismatch_names_file_and_layer(shared_models: Path, tmp_path: Path) -> None:
    path = _writable_copy(shared_models / "dwi_ctr.h5", tmp_path / "badshape.h5")
    with h5py.File(path, "a") as f:
        group = f["model_weights/conv2d_3/conv2d_3"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", data=np.zeros((3, 3, 8, 17), "float32"))
    with pytest.raises(ValueError, match=r"badshape.h5.*conv2d_3.*kernel.*\(3, 3, 8, 17\)"):
        load_keras2_h5(path)


def _edit_config(path: Path, edit) -> None:
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config["config"]["layers"])
        f.attrs["model_config"] = json.dumps(config).encode()


def test_unsupported_layer_and_lambda_raise(shared_models: Path, tmp_path: Path) -> None:
    path = _writable_copy(shared_models / "dwi_ctr.h5", tmp_path / "lstm.h5")
    _edit_config(path, lambda layers: layers[5].update(class_name="LSTM"))
    with pytest.raises(ValueError, match=r"lstm.h5.*conv2d_2.*unsupported layer class"):
        load_keras2_h5(path)

    path = _writable_copy(shared_models / "dwi_ctr.h5", tmp_path / "lambda.h5")

    def square(layers: list) -> None:  # 'lambda z: z * temperature' (BINARY_MULTIPLY)
        lam = next(layer for layer in layers if layer["class_name"] == "Lambda")
        lam["config"]["function"][0] = lam["config"]["function"][0].replace("\x1bS", "\x14S")

    _edit_config(path, square)
    with pytest.raises(ValueError, match=r"lambda.h5.*lambda_1.*unsupported Lambda"):
        load_keras2_h5(path)

    path = _writable_copy(shared_models / "dwi_ctr.h5", tmp_path / "regul.h5")
    _edit_config(
        path,
        lambda layers: layers[1]["config"].update(kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}}),
    )
    with pytest.raises(ValueError, match=r"regul.h5.*conv2d_1.*kernel_regularizer"):
        load_keras2_h5(path)


# --------------------------------------------------------------------------- synthetic 3D file
_K2_CLASS = {
    "InputLayer": "InputLayer",
    "Conv3D": "Conv3D",
    "BatchNormalization": "BatchNormalization",
    "Activation": "Activation",
    "MaxPooling3D": "MaxPooling3D",
    "UpSampling3D": "UpSampling3D",
    "Concatenate": "Concatenate",
}
_GLOROT = {"class_name": "VarianceScaling", "config": {"distribution": "uniform", "scale": 1.0, "seed": None, "mode": "fan_avg"}}


def _keras2_layer_config(layer: keras.layers.Layer, name: str) -> dict:
    """Keras-2.0.x config of one layer of our 3D U-Net, written channels-first as SCT trained it."""
    cls = type(layer).__name__
    if cls == "InputLayer":
        return {"batch_input_shape": [None, 1, 48, 48, 48], "dtype": "float32", "sparse": False}
    if cls == "Conv3D":
        return {
            "filters": layer.filters,
            "kernel_size": list(layer.kernel_size),
            "strides": [1, 1, 1],
            "padding": layer.padding,
            "data_format": "channels_first",
            "dilation_rate": [1, 1, 1],
            "activation": "linear",
            "use_bias": True,
            "kernel_initializer": _GLOROT,
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
            "trainable": True,
        }
    if cls == "BatchNormalization":
        return {"axis": 1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}
    if cls == "Activation":
        return {"activation": layer.activation.__name__}
    if cls == "MaxPooling3D":
        return {"pool_size": [2, 2, 2], "strides": [2, 2, 2], "padding": "valid", "data_format": "channels_first"}
    if cls == "UpSampling3D":
        return {"size": [2, 2, 2], "data_format": "channels_first"}
    return {"axis": 1}


def _write_keras2_3d(model: keras.Model, path: Path) -> dict[str, str]:
    """Save ``model`` as Keras 2.0.6 would have saved SCT's channels-first 3D U-Net."""
    mapping = sct_layer_name_map(model)
    k3 = {layer["name"]: layer for layer in model.get_config()["layers"]}
    layers = []
    for layer in model.layers:
        name = mapping[layer.name]
        inbound = []
        for node in k3[layer.name]["inbound_nodes"]:
            args = node["args"][0] if isinstance(node["args"][0], list) else [node["args"][0]]
            inbound.append([[mapping[a["config"]["keras_history"][0]], 0, 0, {}] for a in args])
        layers.append(
            {
                "class_name": _K2_CLASS[type(layer).__name__],
                "name": name,
                "inbound_nodes": inbound,
                "config": {"name": name, **_keras2_layer_config(layer, name)},
            }
        )
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [[mapping["head_sigmoid"], 0, 0]],
        },
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.6"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [mapping[layer.name].encode() for layer in model.layers]
        for layer in model.layers:
            name = mapping[layer.name]
            sub = group.create_group(name)
            sub.attrs["weight_names"] = [f"{name}/{w.name}:0".encode() for w in layer.weights]
            for w in layer.weights:
                sub.create_dataset(f"{name}/{w.name}:0", data=np.asarray(w))
    return mapping


def test_channels_first_3d_keras2_file_loads_channels_last(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    cfg = UNet3DConfig(base_filters=2, patch_size=(16, 16, 16))
    ours = build_unet3d(cfg)
    rng = np.random.default_rng(3)
    for layer in ours.layers:  # non-trivial batch-norm statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    path = tmp_path / "t2_sc_3D_like.h5"
    _write_keras2_3d(ours, path)

    rebuilt = load_keras2_h5(path)
    assert rebuilt.input_shape == (None, 48, 48, 48, 1)  # channels-first (1, 48, 48, 48) moved last
    assert rebuilt.layers[-2].name == "conv3d_11"
    x = rng.normal(size=(1, 48, 48, 48, 1)).astype("float32")
    expected = np.asarray(ours(x, training=False))
    np.testing.assert_allclose(np.asarray(rebuilt(x, training=False)), expected, atol=1e-5)

    fresh = build_unet3d(cfg)
    load_keras2_weights(fresh, path, sct_layer_name_map(fresh))
    np.testing.assert_allclose(np.asarray(fresh(x, training=False)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="without stored weights"):
        load_keras2_weights(build_unet3d(cfg), path)  # our names are not SCT's without the map
    with pytest.raises(ValueError, match=r"t2_sc_3D_like.h5.*conv3d_1.*shape"):
        load_keras2_weights(
            build_unet3d(UNet3DConfig(base_filters=4, patch_size=(16, 16, 16))), path, sct_layer_name_map(build_unet3d(cfg))
        )


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


def _peak_errors_mm(model: keras.Model, image: Path, mask: Path) -> np.ndarray:
    """Per slice containing the mask: distance (mm) from the heat-map peak to the mask centre."""
    volume = prepare_ctr_input(nib.load(image)).get_fdata(dtype=np.float32)
    cord = prepare_ctr_input(nib.load(mask), order=1).get_fdata() > 0.5
    heat = sct_heatmap(model, volume, contrast="t2")
    errors = []
    for z in np.flatnonzero(cord.any(axis=(0, 1))):
        centre = np.array(ndimage.center_of_mass(cord[:, :, z]))
        errors.append(np.linalg.norm((_peak(heat[:, :, z]) - centre) * 0.5))
    return np.array(errors)


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


def test_keras2_sequential_config_is_rebuilt(tmp_path: Path) -> None:
    """Keras 2.0 Sequential: a bare layer list, the first layer carrying batch_input_shape."""
    rng = np.random.default_rng(7)
    kernel, bias = rng.normal(size=(3, 3, 1, 2)).astype("float32"), np.array([0.5, -0.5], "float32")
    conv = {
        "class_name": "Conv2D",
        "config": {
            "name": "conv2d_1",
            "batch_input_shape": [None, 8, 8, 1],
            "dtype": "float32",
            "filters": 2,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "same",
            "data_format": "channels_last",
            "dilation_rate": [1, 1],
            "activation": "relu",
            "use_bias": True,
            "kernel_initializer": _GLOROT,
            "bias_initializer": {"class_name": "Zeros", "config": {}},
        },
    }
    pool = {
        "class_name": "MaxPooling2D",
        "config": {"name": "max_pooling2d_1", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"},
    }
    path = tmp_path / "seq.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.6"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": [conv, pool]}).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [b"conv2d_1", b"max_pooling2d_1"]
        group.create_group("max_pooling2d_1").attrs["weight_names"] = np.array([], "S1")
        sub = group.create_group("conv2d_1")
        sub.attrs["weight_names"] = [b"conv2d_1/kernel:0", b"conv2d_1/bias:0"]
        sub.create_dataset("conv2d_1/kernel:0", data=kernel)
        sub.create_dataset("conv2d_1/bias:0", data=bias)
    model = load_keras2_h5(path)
    x = rng.normal(size=(1, 8, 8, 1)).astype("float32")
    reference = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    )
    reference.layers[0].set_weights([kernel, bias])
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
