"""Load SCT's deepseg_sc centerline models (``*_ctr.h5``, Keras 2.0 HDF5) into our 2D U-Net.

Keras 3 cannot read Keras-2 model configs, and it does not need to: every ``*_ctr.h5`` file is
SCT's ``nn_architecture_ctr``, which :func:`lumbo_bids.model.network.build_unet2d` builds
layer for layer. :func:`load_keras2_h5`

1. reads the root attribute ``model_config`` (a Keras-2 ``Model``: its layer list, each layer's
   arguments and ``inbound_nodes`` ``[[[layer, node, tensor, kwargs], ...]]``);
2. derives a :class:`~lumbo_bids.model.unet_config.UNet2DConfig` from it
   (:func:`ctr_config_from_h5`): depth = number of ``MaxPooling2D``, base filters = the first
   ``Conv2D``'s, bottleneck = the ``Conv2D`` between the last pooling and the first
   ``Conv2DTranspose``, dropout, batch norm, channels, patch size, and the temperature of SCT's
   ``Lambda(lambda z: z / temperature)`` (recognised from its Python-2 bytecode);
3. builds that config with ``build_unet2d`` and pairs its layers with the file's, in order,
   checking that each pair has the same class, the same architecture arguments (filters,
   kernel, strides, dilation, padding, activation, ...) and the same inputs; channels-first
   files are accepted (kernels and batch-norm vectors do not depend on the layout);
4. assigns the arrays of group ``model_weights``, checking every name and shape.

A file that is not such a U-Net (another architecture, a 3D model, an unknown ``Lambda``, a
weight of the wrong shape, a truncated or non-HDF5 file) raises a one-line
:class:`~lumbo_bids.errors.LumboError` naming the file; no other graph is ever built.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from ..errors import InvalidInputError, LumboError, MissingInputError
from .network import build_unet2d
from .unet_config import UNet2DConfig

__all__ = ["ctr_config_from_h5", "load_keras2_h5"]

PathLike = str | os.PathLike[str]

#: Architecture arguments compared between a Keras-2 layer and ours, per Keras-2 class.
_ARCH_ARGS: dict[str, tuple[str, ...]] = {
    "InputLayer": (),
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation", "use_bias"),
    "Conv2DTranspose": ("filters", "kernel_size", "strides", "padding", "activation", "use_bias"),
    "BatchNormalization": ("axis", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "Dropout": ("rate",),
    "MaxPooling2D": ("pool_size", "strides", "padding"),
    "Concatenate": ("axis",),
    "Lambda": (),  # the temperature is read into the config, so it matches by construction
}
_NOT_CTR = "not a deepseg_sc 2D centerline U-Net (SCT nn_architecture_ctr)"


def _not_ctr(path: PathLike, detail: str) -> LumboError:
    return InvalidInputError(f"{path}: {_NOT_CTR}: {detail}")


# --------------------------------------------------------------------------- file access
@contextmanager
def _open(path: PathLike) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; a missing, non-HDF5 or truncated file is a one-line error naming it."""
    if not Path(path).is_file():
        raise MissingInputError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        with handle:
            yield handle
    except (OSError, KeyError, RuntimeError) as exc:
        raise InvalidInputError(f"{path}: corrupt or truncated Keras HDF5 file ({exc})") from exc


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _attr_names(node: h5py.HLObject, key: str, path: PathLike) -> list[str]:
    if key not in node.attrs:
        raise InvalidInputError(f"{path}: missing HDF5 attribute {key!r} on {node.name!r}")
    return [_text(n) for n in np.atleast_1d(node.attrs[key])]


def _read_layers(handle: h5py.File, path: PathLike) -> list[dict[str, Any]]:
    """The layer list of the file's Keras-2 functional ``model_config``."""
    version = _text(handle.attrs.get("keras_version", b""))
    if not version.startswith("2."):
        raise _not_ctr(path, f"saved by Keras {version or 'of unknown version'}, not Keras 2")
    if "model_config" not in handle.attrs:
        raise InvalidInputError(f"{path}: missing HDF5 attribute 'model_config' (a weights-only file?)")
    try:
        config = json.loads(_text(handle.attrs["model_config"]))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: attribute 'model_config' is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("class_name") not in ("Model", "Functional"):
        raise _not_ctr(path, f"model class {config.get('class_name') if isinstance(config, dict) else None!r}")
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(la, dict) and "class_name" in la and "name" in la.get("config", {}) for la in layers
    ):
        raise InvalidInputError(f"{path}: model_config has no readable layer list")
    return layers


def _read_weights(handle: h5py.File, path: PathLike) -> dict[str, dict[str, np.ndarray]]:
    """``{file layer: {weight name without prefix and ':0': array}}`` of the layers holding weights."""
    if "model_weights" not in handle:
        raise InvalidInputError(f"{path}: no 'model_weights' group")
    group = handle["model_weights"]
    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer in _attr_names(group, "layer_names", path):
        if layer not in group:
            raise InvalidInputError(f"{path}: layer {layer!r} listed in layer_names has no group")
        arrays = {}
        for name in _attr_names(group[layer], "weight_names", path):
            if name not in group[layer]:
                raise InvalidInputError(f"{path}: layer {layer!r}: weight {name!r} missing")
            arrays[name.rsplit("/", 1)[-1].split(":", 1)[0]] = np.asarray(group[layer][name])
        if arrays:
            weights[layer] = arrays
    return weights


# --------------------------------------------------------------------------- SCT's Lambda
# Python-2.7 bytecode of ``lambda z: z / temperature`` (temperature a closure cell):
# LOAD_FAST 0; LOAD_DEREF 0; BINARY_TRUE_DIVIDE (0x1b) or BINARY_DIVIDE (0x15); RETURN_VALUE.
_PY2_DIVIDE_BY_FREEVAR = {b"|\x00\x00\x88\x00\x00\x1bS", b"|\x00\x00\x88\x00\x00\x15S"}


def _lambda_temperature(cfg: dict[str, Any], where: str) -> float:
    """The temperature of SCT's ``Lambda(lambda z: z / temperature)``; any other Lambda raises.

    Keras 2 stores a lambda as ``[marshal(code), defaults, closure]``; the Python-2.7 code
    object (``'c'``, four int32 fields, then the bytecode as ``'s' + int32 length + bytes``) is
    decoded just far enough to compare its bytecode with the expected one.
    """
    function = cfg.get("function")
    code = b""
    if cfg.get("function_type") == "lambda" and isinstance(function, list) and len(function) == 3:
        raw = str(function[0]).encode("raw_unicode_escape")
        if raw[:1] == b"c" and raw[17:18] == b"s" and len(raw) >= 22 and struct.unpack("<i", raw[1:5])[0] == 1:
            code = raw[22 : 22 + struct.unpack("<i", raw[18:22])[0]]
    closure = function[2] if code else None
    if (
        code not in _PY2_DIVIDE_BY_FREEVAR
        or cfg.get("arguments")
        or not (isinstance(closure, list) and len(closure) == 1 and isinstance(closure[0], (int, float)))
        or closure[0] <= 0
    ):
        raise InvalidInputError(
            f"{where}: unsupported Lambda (only SCT's 'lambda z: z / temperature', temperature > 0)",
        )
    return float(closure[0])


# --------------------------------------------------------------------------- config
def _layout(layers: list[dict[str, Any]], path: PathLike) -> str:
    """``channels_last`` or ``channels_first``: the data format all the layers share."""
    formats = {la["config"]["data_format"] for la in layers if "data_format" in la["config"]}
    if len(formats) > 1:
        raise _not_ctr(path, f"layers mix data formats {sorted(formats)}")
    return formats.pop() if formats else "channels_last"


def _derive_config(layers: list[dict[str, Any]], path: PathLike) -> UNet2DConfig:
    """The :class:`UNet2DConfig` whose ``build_unet2d`` has this Keras-2 layer list (if any does)."""
    classes = [la["class_name"] for la in layers]
    unknown = sorted({c for c in classes if c not in _ARCH_ARGS})
    if unknown or classes.count("InputLayer") != 1 or classes.count("Lambda") != 1 or "MaxPooling2D" not in classes:
        counts = ", ".join(f"{classes.count(c)} {c}" for c in ("InputLayer", "Lambda", "MaxPooling2D"))
        found = f"layer classes {unknown}" if unknown else f"{counts} (expected 1, 1 and at least 1)"
        raise _not_ctr(path, found)
    by_class = {c: [la["config"] for la in layers if la["class_name"] == c] for c in _ARCH_ARGS}
    shape = by_class["InputLayer"][0].get("batch_input_shape") or []
    if len(shape) != 4:
        raise _not_ctr(path, f"input shape {shape} is not a batch of 2D images")
    channels_first = _layout(layers, path) == "channels_first"
    channels, spatial = (shape[1], shape[2:]) if channels_first else (shape[3], shape[1:3])
    last_pool = len(classes) - 1 - classes[::-1].index("MaxPooling2D")
    first_up = classes.index("Conv2DTranspose") if "Conv2DTranspose" in classes else len(classes)
    rates = {cfg.get("rate") for cfg in by_class["Dropout"]}
    if len(rates) > 1:
        raise _not_ctr(path, f"dropout rates {sorted(map(str, rates))} differ")
    where = f"{path}: layer {by_class['Lambda'][0]['name']!r}"
    try:
        return UNet2DConfig(
            base_filters=int(by_class["Conv2D"][0]["filters"]),
            depth=len(by_class["MaxPooling2D"]),
            dilation_layers=classes[last_pool:first_up].count("Conv2D"),
            in_channels=int(channels),
            n_labels=int(by_class["Conv2D"][-1]["filters"]),
            batch_norm=bool(by_class["BatchNormalization"]),
            dropout=float(rates.pop()) if rates else 0.0,
            temperature=_lambda_temperature(by_class["Lambda"][0], where),
            patch_size=tuple(int(s) for s in spatial) if all(spatial) else UNet2DConfig().patch_size,
        )
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise _not_ctr(path, str(exc)) from exc


def ctr_config_from_h5(path: PathLike) -> UNet2DConfig:
    """The U-Net config of SCT centerline model ``path``, read from its ``model_config`` only.

    This is cheap (no network is built, no weight read); :func:`load_keras2_h5` further
    checks every layer and weight. Raises :class:`LumboError` naming the file.
    """
    with _open(path) as handle:
        return _derive_config(_read_layers(handle, path), path)


# --------------------------------------------------------------------------- pairing
def _normalise(key: str, value: Any, channel_axes: tuple[int, ...]) -> Any:
    if key == "axis" and value in channel_axes:
        return "channels"
    if key == "activation" and value is None:
        return "linear"
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(key, v, ()) for v in value)
    return value


def _arch_args(cls: str, cfg: dict[str, Any], channel_axes: tuple[int, ...]) -> dict[str, Any]:
    return {key: _normalise(key, cfg.get(key), channel_axes) for key in _ARCH_ARGS[cls]}


def _keras3_inputs(model: keras.Model) -> dict[str, list[str]]:
    """``{layer: [names of the layers feeding it]}`` of a functional Keras-3 model."""

    def history(obj: Any) -> list[str]:
        if isinstance(obj, dict):
            if "keras_history" in obj.get("config", {}):
                return [obj["config"]["keras_history"][0]]
            return [name for value in obj.values() for name in history(value)]
        if isinstance(obj, (list, tuple)):
            return [name for value in obj for name in history(value)]
        return []

    return {layer["name"]: history(layer["inbound_nodes"]) for layer in model.get_config()["layers"]}


def _keras2_inputs(layer: dict[str, Any], path: PathLike) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    try:
        return [str(item[0]) for node in nodes for item in node]
    except (TypeError, IndexError) as exc:
        raise InvalidInputError(f"{path}: layer {layer['name']!r}: unreadable inbound_nodes") from exc


def _pair_layers(model: keras.Model, layers: list[dict[str, Any]], path: PathLike, channels_first: bool) -> dict[str, str]:
    """``{our layer: file layer}``, after checking class, arguments and inputs of every pair."""
    if len(model.layers) != len(layers):
        raise _not_ctr(path, f"{len(layers)} layers, the U-Net of its own config has {len(model.layers)}")
    ours_to_file = {ours.name: k2["config"]["name"] for ours, k2 in zip(model.layers, layers)}
    ours_inputs = _keras3_inputs(model)
    for ours, k2 in zip(model.layers, layers):
        cls, name = k2["class_name"], k2["config"]["name"]
        expected = "Lambda" if type(ours).__name__ == "TemperatureScaling" else type(ours).__name__
        if cls != expected:
            raise _not_ctr(path, f"layer {name!r} is a {cls}, expected a {expected}")
        theirs = _arch_args(cls, k2["config"], (1,) if channels_first else (-1, 3))
        wanted = _arch_args(cls, ours.get_config(), (-1, 3))
        for key, value in theirs.items():
            if value != wanted[key]:
                raise _not_ctr(path, f"layer {name!r} ({cls}) has {key}={value}, expected {wanted[key]}")
        inputs = [ours_to_file[n] for n in ours_inputs[ours.name]]
        if _keras2_inputs(k2, path) != inputs:
            raise _not_ctr(path, f"layer {name!r} takes {_keras2_inputs(k2, path)}, expected {inputs}")
    return ours_to_file


def _assign_weights(model: keras.Model, stored: dict[str, dict[str, np.ndarray]], names: dict[str, str], path: PathLike) -> None:
    unused = sorted(set(stored) - set(names.values()))
    if unused:
        raise InvalidInputError(f"{path}: weights stored for layers not in the model: {unused}")
    for layer in model.layers:
        src = names[layer.name]
        arrays = stored.get(src, {})
        variables = {v.name.rsplit("/", 1)[-1].split(":", 1)[0]: v for v in layer.weights}
        if set(variables) != set(arrays):
            raise InvalidInputError(
                f"{path}: layer {src!r}: stored weights {sorted(arrays)}, expected {sorted(variables)}",
            )
        for key, array in arrays.items():
            if tuple(variables[key].shape) != array.shape:
                shapes = f"{array.shape} in the file, {tuple(variables[key].shape)} expected"
                raise InvalidInputError(f"{path}: layer {src!r}: weight {key!r} has shape {shapes}")
        for key, array in arrays.items():
            variables[key].assign(array.astype(variables[key].dtype))


def load_keras2_h5(path: PathLike) -> keras.Model:
    """SCT centerline model ``path`` as our :func:`~lumbo_bids.model.network.build_unet2d` U-Net.

    Returns
    -------
    keras.Model
        Channels-last, input ``(None, None, None, in_channels)`` (any slice size divisible
        by ``2 ** depth``; SCT runs it on 80x80 blocks), with the file's weights; our layer
        names (``enc0_conv1``, ...).

    Raises
    ------
    LumboError
        One line naming the file: missing, not HDF5, truncated, not Keras 2, not SCT's
        ``nn_architecture_ctr`` (which layer differs and how), or a weight of the wrong shape.
    """
    with _open(path) as handle:
        layers = _read_layers(handle, path)
        cfg = _derive_config(layers, path)
        stored = _read_weights(handle, path)
    model = build_unet2d(cfg)
    names = _pair_layers(model, layers, path, _layout(layers, path) == "channels_first")
    _assign_weights(model, stored, names, path)
    return model
