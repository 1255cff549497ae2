"""Read Keras 2.x HDF5 models (such as SCT's ``*_ctr.h5``) into Keras 3.

Keras 3 cannot deserialise Keras-2 model configs, so ``keras.models.load_model``
is not used. Instead :func:`load_keras2_h5`

1. reads the root attribute ``model_config`` (JSON: a ``Model``/``Functional``
   graph whose ``inbound_nodes`` use the Keras-2 list format
   ``[[[layer, node_index, tensor_index, kwargs], ...]]``, or a ``Sequential``
   layer list);
2. translates each layer's class and arguments to Keras 3 (supported classes:
   :data:`SUPPORTED_LAYERS`; initializer dicts through
   ``keras.initializers.get``; ``InputLayer.batch_input_shape`` -> ``shape``;
   SCT's ``Lambda(lambda z: z / temperature)`` -> :class:`TemperatureScaling`,
   recognised from its Python-2 bytecode; any other Lambda is refused);
3. converts channels-first models (SCT's 3D models) to channels-last, which is
   what TensorFlow runs on a CPU: ``data_format``, batch-norm / concatenation
   axis 1 -> -1, and the input shape are changed, kernels are layout
   independent and stay as stored;
4. wires a functional Keras-3 model with the same layer names, and
5. assigns the arrays of group ``model_weights`` layer by layer, by name,
   checking every name and shape (:func:`load_keras2_weights`).

Every problem (not HDF5, truncated, missing attribute, unsupported layer or
argument, shape mismatch) raises ``ValueError`` naming the file (and layer).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import h5py
import keras
import numpy as np

from lumbo_bids.model.network import TemperatureScaling

__all__ = [
    "SUPPORTED_LAYERS",
    "describe_keras2_h5",
    "is_keras2_h5",
    "load_keras2_h5",
    "load_keras2_weights",
    "read_keras2_weights",
]

PathLike = str | os.PathLike[str]

# Arguments kept per Keras-2 class (others must be absent, None or ignorable).
_CONV = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_CONV_T = tuple(a for a in _CONV if a != "dilation_rate") + ("output_padding",)
_POOL = ("pool_size", "strides", "padding", "data_format")
_BN = (
    "axis",
    "momentum",
    "epsilon",
    "center",
    "scale",
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "beta_regularizer",
    "gamma_regularizer",
    "beta_constraint",
    "gamma_constraint",
)

#: Keras-2 class name -> (Keras-3 layer class, arguments carried over).
SUPPORTED_LAYERS: dict[str, tuple[type[keras.layers.Layer], tuple[str, ...]]] = {
    "Conv2D": (keras.layers.Conv2D, _CONV),
    "Conv3D": (keras.layers.Conv3D, _CONV),
    "Conv2DTranspose": (keras.layers.Conv2DTranspose, _CONV_T),
    "Conv3DTranspose": (keras.layers.Conv3DTranspose, _CONV_T),
    "BatchNormalization": (keras.layers.BatchNormalization, _BN),
    "Activation": (keras.layers.Activation, ("activation",)),
    "Dropout": (keras.layers.Dropout, ("rate", "noise_shape", "seed")),
    "SpatialDropout2D": (keras.layers.SpatialDropout2D, ("rate", "data_format")),
    "SpatialDropout3D": (keras.layers.SpatialDropout3D, ("rate", "data_format")),
    "MaxPooling2D": (keras.layers.MaxPooling2D, _POOL),
    "MaxPooling3D": (keras.layers.MaxPooling3D, _POOL),
    "AveragePooling2D": (keras.layers.AveragePooling2D, _POOL),
    "AveragePooling3D": (keras.layers.AveragePooling3D, _POOL),
    "UpSampling2D": (keras.layers.UpSampling2D, ("size", "data_format", "interpolation")),
    "UpSampling3D": (keras.layers.UpSampling3D, ("size", "data_format")),
    "Cropping2D": (keras.layers.Cropping2D, ("cropping", "data_format")),
    "Cropping3D": (keras.layers.Cropping3D, ("cropping", "data_format")),
    "Concatenate": (keras.layers.Concatenate, ("axis",)),
    "Add": (keras.layers.Add, ()),
    "Lambda": (TemperatureScaling, ()),
}

# Keras-2 arguments with no effect on the rebuilt inference graph.
_IGNORED = {"name", "trainable", "dtype", "batch_input_shape", "batch_size", "sparse", "ragged"}
_INITIALIZER_ARGS = {a for a in _CONV + _BN if a.endswith("_initializer")}
_REGULARIZER_ARGS = {a for a in _CONV + _BN if a.endswith(("_regularizer", "_constraint"))}
_CHANNELS_FIRST_AXIS_LAYERS = ("BatchNormalization", "Concatenate")


# --------------------------------------------------------------------------- file access
@contextmanager
def _open(path: PathLike) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; any HDF5 / format error becomes a ``ValueError`` naming it."""
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        with handle:
            yield handle
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(f"{path}: corrupt or truncated Keras HDF5 file ({exc})") from exc


def _attr_str(node: h5py.HLObject, key: str, path: PathLike) -> str:
    if key not in node.attrs:
        raise ValueError(f"{path}: missing HDF5 attribute {key!r} on {node.name!r}")
    value = node.attrs[key]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _attr_names(node: h5py.HLObject, key: str, path: PathLike) -> list[str]:
    if key not in node.attrs:
        raise ValueError(f"{path}: missing HDF5 attribute {key!r} on {node.name!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in np.atleast_1d(node.attrs[key])]


def _weights_group(handle: h5py.File, path: PathLike) -> h5py.Group:
    """``model_weights`` of a full-model file, or the root of a ``save_weights`` file."""
    if "model_weights" in handle:
        return handle["model_weights"]
    if "layer_names" in handle.attrs:
        return handle
    raise ValueError(f"{path}: no 'model_weights' group and no 'layer_names' attribute (not a Keras-2 file)")


def _model_config(handle: h5py.File, path: PathLike) -> dict[str, Any]:
    try:
        config = json.loads(_attr_str(handle, "model_config", path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: attribute 'model_config' is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise ValueError(f"{path}: 'model_config' has no class_name/config")
    return config


def is_keras2_h5(path: PathLike) -> bool:
    """Whether ``path`` is a readable HDF5 file saved by Keras 2.x (model or weights)."""
    try:
        with _open(path) as handle:
            group = _weights_group(handle, path)
            version = handle.attrs.get("keras_version", group.attrs.get("keras_version", b""))
            version = version.decode() if isinstance(version, bytes) else str(version)
            return version.startswith("2.")
    except ValueError:
        return False


def read_keras2_weights(path: PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Stored weights, ``{layer: {weight name without layer prefix and ':0': array}}``.

    Only layers that hold weights are listed, in file order.
    """
    weights: dict[str, dict[str, np.ndarray]] = {}
    with _open(path) as handle:
        group = _weights_group(handle, path)
        for layer in _attr_names(group, "layer_names", path):
            if layer not in group:
                raise ValueError(f"{path}: layer {layer!r} listed in layer_names has no group")
            names = _attr_names(group[layer], "weight_names", path)
            arrays = {}
            for name in names:
                if name not in group[layer]:
                    raise ValueError(f"{path}: layer {layer!r}: weight {name!r} missing")
                arrays[_short_weight_name(name)] = np.asarray(group[layer][name])
            if arrays:
                weights[layer] = arrays
    return weights


def _short_weight_name(name: str) -> str:
    """``'conv2d_1/kernel:0' -> 'kernel'``."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def describe_keras2_h5(path: PathLike) -> dict[str, Any]:
    """Summarise a Keras-2 HDF5 model file without building it.

    Returns
    -------
    dict
        ``path``, ``keras_version``, ``backend``, ``model_class``, ``input_shape``
        (batch dimension included, as stored), ``layers`` (list of ``{"name",
        "class_name", "weights": {name: shape}}``), ``output_layers`` and
        ``n_params``.
    """
    with _open(path) as handle:
        config = _model_config(handle, path)
        keras_version = _attr_str(handle, "keras_version", path)
        backend = handle.attrs.get("backend", b"")
    layers_cfg = _layer_list(config, path)
    weights = read_keras2_weights(path)
    layers = [
        {
            "name": layer["config"]["name"],
            "class_name": layer["class_name"],
            "weights": {k: tuple(v.shape) for k, v in weights.get(layer["config"]["name"], {}).items()},
        }
        for layer in layers_cfg
    ]
    inputs = [_batch_input_shape(layer, path) for layer in layers_cfg if _is_input(layer)]
    return {
        "path": str(path),
        "keras_version": keras_version,
        "backend": backend.decode() if isinstance(backend, bytes) else str(backend),
        "model_class": config["class_name"],
        "input_shape": inputs[0] if len(inputs) == 1 else inputs,
        "layers": layers,
        "output_layers": [o[0] for o in config["config"].get("output_layers", [])] or [layers[-1]["name"]],
        "n_params": int(sum(a.size for layer in weights.values() for a in layer.values())),
    }


# --------------------------------------------------------------------------- config parsing
def _layer_list(config: dict[str, Any], path: PathLike) -> list[dict[str, Any]]:
    """Layers of a Keras-2 ``Model``/``Functional`` or ``Sequential`` config."""
    body = config["config"]
    if config["class_name"] == "Sequential":
        layers = body if isinstance(body, list) else body.get("layers")
    elif config["class_name"] in ("Model", "Functional"):
        layers = body.get("layers")
    else:
        raise ValueError(f"{path}: unsupported model class {config['class_name']!r}")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: model_config has no layer list")
    for layer in layers:
        if not isinstance(layer, dict) or "class_name" not in layer or "name" not in layer.get("config", {}):
            raise ValueError(f"{path}: malformed layer entry {str(layer)[:80]!r}")
    return layers


def _is_input(layer: dict[str, Any]) -> bool:
    return layer["class_name"] == "InputLayer"


def _batch_input_shape(layer: dict[str, Any], path: PathLike) -> list[int | None]:
    cfg = layer["config"]
    shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
    if not shape:
        raise ValueError(f"{path}: layer {cfg['name']!r}: no batch_input_shape")
    return list(shape)


def _is_channels_first(layers: list[dict[str, Any]]) -> bool:
    return any(layer["config"].get("data_format") == "channels_first" for layer in layers)


def _to_channels_last(layer: dict[str, Any], path: PathLike) -> dict[str, Any]:
    """Return a copy of a channels-first layer config rewritten for channels-last."""
    cls, cfg = layer["class_name"], dict(layer["config"])
    name = cfg["name"]
    if "data_format" in cfg:
        cfg["data_format"] = "channels_last"
    if cls in _CHANNELS_FIRST_AXIS_LAYERS:
        axis = cfg.get("axis", -1)
        if axis not in (1, [1]):
            raise ValueError(f"{path}: layer {name!r}: axis {axis} cannot be converted to channels-last")
        cfg["axis"] = -1
    elif cls not in SUPPORTED_LAYERS and cls != "InputLayer":
        raise ValueError(f"{path}: layer {name!r}: {cls} cannot be converted to channels-last")
    return {**layer, "config": cfg}


def _translate_argument(key: str, value: Any, where: str) -> Any:
    if key in _INITIALIZER_ARGS:
        try:
            return keras.initializers.get(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: unsupported {key} {value!r}") from exc
    if key in _REGULARIZER_ARGS or key == "activity_regularizer":
        if value is not None:
            raise ValueError(f"{where}: {key} {value!r} is not supported")
        return None
    if key == "activation":
        try:
            return keras.activations.get(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: unsupported activation {value!r}") from exc
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _build_layer(layer: dict[str, Any], path: PathLike) -> keras.layers.Layer:
    """Translate one Keras-2 layer config into a Keras-3 layer (not ``InputLayer``)."""
    cls, cfg = layer["class_name"], layer["config"]
    where = f"{path}: layer {cfg['name']!r} ({cls})"
    if cls not in SUPPORTED_LAYERS:
        raise ValueError(f"{where}: unsupported layer class")
    if cls == "Lambda":
        return TemperatureScaling(_lambda_temperature(cfg, where), name=cfg["name"])
    keras3_cls, allowed = SUPPORTED_LAYERS[cls]
    kwargs: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in _IGNORED:
            continue
        if key not in allowed:
            raise ValueError(f"{where}: unsupported argument {key}={value!r}")
        translated = _translate_argument(key, value, where)
        if translated is not None:
            kwargs[key] = translated
    try:
        built = keras3_cls(name=cfg["name"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot be rebuilt in Keras 3 ({exc})") from exc
    built.trainable = bool(cfg.get("trainable", True))
    return built


# Python-2.7 bytecode of ``lambda z: z / temperature`` (temperature a closure cell):
# LOAD_FAST 0; LOAD_DEREF 0; BINARY_TRUE_DIVIDE (0x1b) or BINARY_DIVIDE (0x15); RETURN_VALUE.
_PY2_DIVIDE_BY_FREEVAR = {b"|\x00\x00\x88\x00\x00\x1bS", b"|\x00\x00\x88\x00\x00\x15S"}


def _lambda_temperature(cfg: dict[str, Any], where: str) -> float:
    """Recognise SCT's ``Lambda(lambda z: z / temperature)`` and return the temperature.

    Keras 2 stores a lambda as ``[marshal(code), defaults, closure]``; the code
    object of Python 2.7 (``'c'``, four int32 fields, then the bytecode as a
    marshal string ``'s' + int32 length + bytes``) is decoded just far enough
    to compare its bytecode with the one expected.
    """
    function = cfg.get("function")
    if cfg.get("function_type") != "lambda" or not isinstance(function, list) or len(function) != 3:
        raise ValueError(f"{where}: only a serialised Python lambda is supported")
    if cfg.get("arguments") or cfg.get("output_shape") is not None:
        raise ValueError(f"{where}: Lambda arguments/output_shape are not supported")
    raw = function[0].encode("raw_unicode_escape")
    code = b""
    if raw[:1] == b"c" and raw[17:18] == b"s" and len(raw) >= 22:
        (argcount,) = struct.unpack("<i", raw[1:5])
        (length,) = struct.unpack("<i", raw[18:22])
        code = raw[22 : 22 + length] if argcount == 1 else b""
    closure = function[2]
    if code not in _PY2_DIVIDE_BY_FREEVAR or not (
        isinstance(closure, list) and len(closure) == 1 and isinstance(closure[0], (int, float))
    ):
        raise ValueError(f"{where}: unsupported Lambda function (only 'lambda z: z / temperature')")
    if closure[0] <= 0:
        raise ValueError(f"{where}: Lambda temperature {closure[0]} must be > 0")
    return float(closure[0])


# --------------------------------------------------------------------------- graph building
def _inbound(layer: dict[str, Any], path: PathLike) -> list[tuple[str, int, int]]:
    """The single call's inputs of a Keras-2 layer, as ``(layer, node, tensor)`` triples."""
    nodes = layer.get("inbound_nodes", [])
    name = layer["config"]["name"]
    if len(nodes) != 1:
        raise ValueError(f"{path}: layer {name!r} is called {len(nodes)} times; shared layers are not supported")
    try:
        return [(str(item[0]), int(item[1]), int(item[2])) for item in nodes[0]]
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{path}: layer {name!r}: unreadable inbound_nodes {nodes!r}") from exc


def _make_input(
    layer: dict[str, Any], path: PathLike, channels_first: bool, input_shape: tuple[int | None, ...] | None
) -> keras.KerasTensor:
    cfg = layer["config"]
    shape = _batch_input_shape(layer, path)[1:]
    if channels_first:
        shape = shape[1:] + shape[:1]
    if input_shape is not None:
        if len(input_shape) != len(shape) or input_shape[-1] != shape[-1]:
            raise ValueError(f"{path}: input_shape {input_shape} incompatible with stored {tuple(shape)}")
        shape = list(input_shape)
    return keras.Input(shape=tuple(shape), name=cfg["name"], dtype=cfg.get("dtype", "float32"))


def _call(layer_obj: keras.layers.Layer, inputs: list[keras.KerasTensor], where: str) -> keras.KerasTensor:
    """Call a rebuilt layer on its inputs (a list for merge layers, one tensor otherwise)."""
    merge = isinstance(layer_obj, (keras.layers.Concatenate, keras.layers.Add))
    if not merge and len(inputs) != 1:
        raise ValueError(f"{where}: expected one input, got {len(inputs)}")
    try:
        return layer_obj(inputs if merge else inputs[0])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: cannot be connected ({exc})") from exc


def _with_sequential_input(layers: list[dict[str, Any]], path: PathLike) -> list[dict[str, Any]]:
    """Prepend the implicit InputLayer of a Keras-2 Sequential config (first layer's batch_input_shape)."""
    if _is_input(layers[0]):
        return layers
    first = layers[0]["config"]
    input_layer = {
        "class_name": "InputLayer",
        "config": {
            "name": f"{first['name']}_input",
            "batch_input_shape": _batch_input_shape(layers[0], path),
            "dtype": first.get("dtype", "float32"),
        },
    }
    return [input_layer] + layers


def _functional_sources(layer: dict[str, Any], tensors: dict[str, keras.KerasTensor], path: PathLike) -> list[str]:
    """Names of the already built layers feeding ``layer`` (Keras-2 ``inbound_nodes``)."""
    sources = []
    for src, node, tensor in _inbound(layer, path):
        if src not in tensors or node != 0 or tensor != 0:
            name = layer["config"]["name"]
            raise ValueError(f"{path}: layer {name!r}: input {src!r}[{node}][{tensor}] is not available")
        sources.append(src)
    return sources


def _io_names(config: dict[str, Any], layers: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Input and output layer names of a Keras-2 model config."""
    if config["class_name"] == "Sequential":
        return [layers[0]["config"]["name"]], [layers[-1]["config"]["name"]]
    body = config["config"]
    return [s[0] for s in body.get("input_layers", [])], [s[0] for s in body.get("output_layers", [])]


def _build_graph(config: dict[str, Any], path: PathLike, input_shape: tuple[int | None, ...] | None) -> keras.Model:
    """Wire a functional Keras-3 model from a Keras-2 model config."""
    layers = _layer_list(config, path)
    channels_first = _is_channels_first(layers)
    if channels_first:
        layers = [_to_channels_last(layer, path) for layer in layers]
    sequential = config["class_name"] == "Sequential"
    if sequential:
        layers = _with_sequential_input(layers, path)
    tensors: dict[str, keras.KerasTensor] = {}
    for index, layer in enumerate(layers):
        name = layer["config"]["name"]
        if name in tensors:
            raise ValueError(f"{path}: duplicate layer name {name!r}")
        if _is_input(layer):
            tensors[name] = _make_input(layer, path, channels_first, input_shape)
            continue
        sources = [layers[index - 1]["config"]["name"]] if sequential else _functional_sources(layer, tensors, path)
        where = f"{path}: layer {name!r} ({layer['class_name']})"
        tensors[name] = _call(_build_layer(layer, path), [tensors[s] for s in sources], where)
    inputs, outputs = _io_names(config, layers)
    missing = [n for n in inputs + outputs if n not in tensors]
    if not inputs or not outputs or missing:
        raise ValueError(f"{path}: model inputs/outputs {inputs}/{outputs} not found (missing {missing})")
    model_inputs = [tensors[n] for n in inputs]
    model_outputs = [tensors[n] for n in outputs]
    return keras.Model(
        model_inputs[0] if len(model_inputs) == 1 else model_inputs,
        model_outputs[0] if len(model_outputs) == 1 else model_outputs,
        name=config["config"].get("name") if isinstance(config["config"], dict) else None,
    )


# --------------------------------------------------------------------------- weights
def _assign_layer(layer: keras.layers.Layer, stored: dict[str, np.ndarray], where: str) -> None:
    variables = {v.name.rsplit("/", 1)[-1].split(":", 1)[0]: v for v in layer.weights}
    if set(variables) != set(stored):
        raise ValueError(f"{where}: stored weights {sorted(stored)} do not match the model's {sorted(variables)}")
    for name, array in stored.items():
        variable = variables[name]
        if tuple(variable.shape) != array.shape:
            raise ValueError(
                f"{where}: weight {name!r} has shape {array.shape} in the file, {tuple(variable.shape)} in the model"
            )
    for name, array in stored.items():
        variables[name].assign(array.astype(variables[name].dtype))


def load_keras2_weights(
    model: keras.Model,
    path: PathLike,
    name_map: dict[str, str] | None = None,
    match: Literal["name", "order"] = "name",
) -> list[str]:
    """Assign the weights of a Keras-2 HDF5 file to a Keras-3 model, checking every shape.

    Parameters
    ----------
    model : keras.Model
        Target model.
    path : path-like
        Keras-2 model (``model_weights`` group) or weights file.
    name_map : dict, optional
        ``{model layer name: file layer name}`` (e.g.
        :func:`lumbo_bids.model.network.sct_layer_name_map`); identity when
        omitted. Only used with ``match="name"``.
    match : {"name", "order"}
        ``"name"``: every model layer with weights takes the file layer of the
        mapped name; ``"order"``: the i-th model layer with weights takes the
        i-th file layer with weights (file ``layer_names`` order).

    Returns
    -------
    list of str
        The model layers that received weights. Every layer with weights on
        either side must be paired, or ``ValueError`` is raised.
    """
    stored = read_keras2_weights(path)
    weighted = [layer for layer in model.layers if layer.weights]
    if match == "order":
        if len(weighted) != len(stored):
            raise ValueError(f"{path}: {len(stored)} layers with weights in the file, {len(weighted)} in the model")
        pairs = list(zip(weighted, stored))
    elif match == "name":
        mapping = name_map or {}
        pairs = [(layer, mapping.get(layer.name, layer.name)) for layer in weighted]
        missing = [f"{layer.name}->{src}" for layer, src in pairs if src not in stored]
        unused = sorted(set(stored) - {src for _, src in pairs})
        if missing or unused:
            raise ValueError(f"{path}: layers without stored weights {missing}; stored but unused {unused}")
    else:
        raise ValueError(f"match must be 'name' or 'order', got {match!r}")
    for layer, src in pairs:
        _assign_layer(layer, stored[src], f"{path}: layer {src!r} -> {layer.name!r}")
    return [layer.name for layer, _ in pairs]


def load_keras2_h5(path: PathLike, input_shape: tuple[int | None, ...] | None = None) -> keras.Model:
    """Rebuild a Keras 2.x HDF5 model in Keras 3 from its stored config and weights.

    Parameters
    ----------
    path : path-like
        HDF5 file written by Keras 2 ``model.save`` (root attribute
        ``model_config``, group ``model_weights``).
    input_shape : tuple, optional
        Replace the stored input shape (batch excluded, channels-last), e.g.
        ``(None, None, 1)`` to run a fully convolutional 2D model on slices of
        any size (divisible by its down-sampling factor).

    Returns
    -------
    keras.Model
        Functional model with the file's layer names and weights (channels-last).

    Raises
    ------
    ValueError
        If the file is not HDF5, is truncated, lacks an attribute, holds an
        unsupported layer or argument, or a weight shape differs; the message
        names the file (and the layer).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with _open(path) as handle:
        config = _model_config(handle, path)
    model = _build_graph(config, path, input_shape)
    load_keras2_weights(model, path)
    return model
