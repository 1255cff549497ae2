"""Network architectures of the deepseg_sc lineage, in Keras 3 (channels-last).

Two builders, each driven by a JSON-serialisable config dataclass:

``build_unet3d(UNet3DConfig)``
    The 3D U-Net of ``sct_deepseg_sc -kernel 3d`` (Gros et al. 2018,
    arXiv:1805.06349), as defined by SCT's
    ``spinalcordtoolbox/deepseg_sc/cnn_models_3d.py::nn_architecture_seg_3d``
    (itself derived from ellisdg/3DUnetCNN and trained with
    sct-pipeline/deepseg-training on 48x48x48 patches at 0.5 mm isotropic).
    For every encoder level ``l`` (``depth`` levels, default 3) two
    ``Conv3D(3x3x3, same) -> BatchNormalization -> ReLU`` blocks with
    ``base_filters * 2**l`` then ``base_filters * 2**l * 2`` filters, and a
    ``MaxPooling3D(2)`` between levels. The decoder, for ``l = depth-2 .. 0``:
    ``UpSampling3D(2)`` (nearest neighbour, no weights), concatenation
    ``[upsampled, skip]`` with the second block of encoder level ``l``, then two
    conv blocks with as many filters as that skip. Head: ``Conv3D(1x1x1,
    n_labels)`` and a sigmoid. No dropout in SCT (``dropout=0``). With the
    default config (16 base filters, depth 3) the filters are
    16-32 | 32-64 | 64-128 | 64-64 | 32-32 | 1 and there are 984,609 parameters
    (982,497 convolution + 2,112 batch-norm, of which 1,056 non-trainable).
    SCT ran it channels-first (``K.set_image_data_format("channels_first")``,
    ``BatchNormalization(axis=1)``, ``concatenate(axis=1)``); kernels and
    batch-norm vectors do not depend on the layout.

``build_unet2d(UNet2DConfig)``
    The 2D centerline-detection U-Net of ``sct_deepseg_sc -centerline cnn``:
    SCT's ``cnn_models.py::nn_architecture_ctr`` (the ``{t2,t2s,t1,dwi}_ctr.h5``
    models). ``depth`` (2) down blocks ``Conv2D(3x3, dilation 1) -> BN -> ReLU
    [-> Dropout] -> Conv2D(3x3, dilation 2) -> BN -> ReLU [-> Dropout] ->
    MaxPooling2D(2)``, the features doubling after each block; then
    ``dilation_layers`` bottleneck convs with dilation 1, 2, 4, ...; then
    ``depth`` up blocks ``Conv2DTranspose(2x2, stride 2) -> Concatenate([up,
    skip]) -> 2 x (Conv2D(3x3) -> BN -> ReLU [-> Dropout])``; head
    ``Conv2D(1x1)`` -> ``z / temperature`` (a Keras-2 ``Lambda`` in SCT, here
    :class:`TemperatureScaling`) -> sigmoid. SCT's settings per contrast are in
    :data:`SCT_CTR_PARAMS` (``UNet2DConfig.sct_ctr("t2")``).

Layer names
-----------
Layers get descriptive names: ``input``, ``enc{l}_conv{k}``, ``enc{l}_bn{k}``,
``enc{l}_relu{k}``, ``enc{l}_drop{k}``, ``enc{l}_pool``, (2D bottleneck)
``bottom_conv{k}``, ``bottom_bn{k}``, ..., ``dec{l}_up``, ``dec{l}_concat``,
``dec{l}_conv{k}``, ..., ``head_conv``, ``head_temperature``,
``head_sigmoid``. Every layer is created in the same order as in SCT's
builders, so the layers of SCT's saved Keras-2 models pair with ours one for
one, in order (:func:`lumbo_bids.model.sct_h5.load_keras2_h5` relies on it).

The config dataclasses live in :mod:`lumbo_bids.model.unet_config` (import them from there).
"""

from __future__ import annotations

from typing import Any, Literal

import keras

from .unet_config import SCT_CTR_PARAMS, UNet2DConfig, UNet3DConfig

__all__ = [
    "SCT_CTR_PARAMS",
    "TemperatureScaling",
    "UNet2DConfig",
    "UNet3DConfig",
    "build_unet2d",
    "build_unet3d",
    "encoder_layer_names",
    "freeze_depth",
]

FreezeMode = Literal["none", "encoder", "all_but_last"]


# --------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="lumbo_bids")
class TemperatureScaling(keras.layers.Layer):
    """Divide the input by a fixed temperature (SCT's ``Lambda(lambda z: z / temperature)``).

    Parameters
    ----------
    temperature : float
        Positive divisor of the logits.
    """

    def __init__(self, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def call(self, inputs):
        return inputs / self.temperature

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


def _conv_bn_relu(
    x,
    filters: int,
    prefix: str,
    index: int,
    *,
    ndim: int,
    kernel_size: int | tuple[int, ...] = 3,
    dilation: int = 1,
    batch_norm: bool = True,
    dropout: float = 0.0,
):
    """``Conv(same) -> [BN] -> ReLU -> [Dropout]`` named ``{prefix}_{conv,bn,relu,drop}{index}``."""
    conv = keras.layers.Conv3D if ndim == 3 else keras.layers.Conv2D
    x = conv(filters, kernel_size, padding="same", dilation_rate=dilation, name=f"{prefix}_conv{index}")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
    x = keras.layers.Activation("relu", name=f"{prefix}_relu{index}")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{prefix}_drop{index}")(x)
    return x


# --------------------------------------------------------------------------- builders
def build_unet3d(cfg: UNet3DConfig | None = None) -> keras.Model:
    """Build the deepseg_sc 3D U-Net (see the module docstring for the layer list).

    Parameters
    ----------
    cfg : UNet3DConfig, optional
        Hyper-parameters; SCT's defaults when omitted.

    Returns
    -------
    keras.Model
        Input ``(None, None, None, None, in_channels)`` (channels-last, any
        spatial size divisible by ``cfg.size_multiple``), output the same
        spatial size with ``n_labels`` sigmoid channels.
    """
    cfg = cfg or UNet3DConfig()
    block = dict(ndim=3, kernel_size=cfg.kernel(), batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    inputs = keras.Input((None, None, None, cfg.in_channels), name="input")
    x = inputs
    skips = []
    for level in range(cfg.depth):
        filters = cfg.base_filters * 2**level
        x = _conv_bn_relu(x, filters, f"enc{level}", 1, **{**block, "kernel_size": cfg.kernel(first=level == 0)})
        x = _conv_bn_relu(x, filters * 2, f"enc{level}", 2, **block)
        if level < cfg.depth - 1:
            skips.append((x, filters * 2))
            x = keras.layers.MaxPooling3D(cfg.pool, name=f"enc{level}_pool")(x)
    for level in range(cfg.depth - 2, -1, -1):
        skip, filters = skips[level]
        if cfg.upsampling == "nearest":
            x = keras.layers.UpSampling3D(cfg.pool, name=f"dec{level}_up")(x)
        else:
            x = keras.layers.Conv3DTranspose(x.shape[-1], cfg.pool, strides=cfg.pool, name=f"dec{level}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = _conv_bn_relu(x, filters, f"dec{level}", 1, **block)
        x = _conv_bn_relu(x, filters, f"dec{level}", 2, **block)
    x = keras.layers.Conv3D(cfg.n_labels, 1, name="head_conv")(x)
    outputs = keras.layers.Activation("sigmoid", name="head_sigmoid")(x)
    return keras.Model(inputs, outputs, name="deepseg_sc_unet3d")


def build_unet2d(cfg: UNet2DConfig | None = None) -> keras.Model:
    """Build the deepseg_sc 2D centerline U-Net (SCT ``nn_architecture_ctr``).

    Parameters
    ----------
    cfg : UNet2DConfig, optional
        Hyper-parameters; SCT's t2 settings when omitted.

    Returns
    -------
    keras.Model
        Input ``(None, None, None, in_channels)`` axial slices (any size
        divisible by ``cfg.size_multiple``), output a sigmoid cord heat-map of
        the same size with ``n_labels`` channels.
    """
    cfg = cfg or UNet2DConfig()
    block = dict(ndim=2, batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    inputs = keras.Input((None, None, cfg.in_channels), name="input")
    x = inputs
    skips = []
    features = cfg.base_filters
    for level in range(cfg.depth):
        x = _conv_bn_relu(x, features, f"enc{level}", 1, dilation=1, **block)
        x = _conv_bn_relu(x, features, f"enc{level}", 2, dilation=2, **block)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        features *= 2
    for index in range(cfg.dilation_layers):
        x = _conv_bn_relu(x, features, "bottom", index + 1, dilation=2**index, **block)
    for level in range(cfg.depth - 1, -1, -1):
        features //= 2
        x = keras.layers.Conv2DTranspose(features, 2, strides=2, name=f"dec{level}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = _conv_bn_relu(x, features, f"dec{level}", 1, **block)
        x = _conv_bn_relu(x, features, f"dec{level}", 2, **block)
    x = keras.layers.Conv2D(cfg.n_labels, 1, name="head_conv")(x)
    x = TemperatureScaling(cfg.temperature, name="head_temperature")(x)
    outputs = keras.layers.Activation("sigmoid", name="head_sigmoid")(x)
    return keras.Model(inputs, outputs, name="deepseg_sc_ctr_unet2d")


# --------------------------------------------------------------------------- freezing
def encoder_layer_names(model: keras.Model) -> list[str]:
    """Names of the contracting-path layers (``enc*`` and the 2D ``bottom*``), in model order.

    This is every layer before the first up-sampling layer, bottleneck
    included, but not the input layer.
    """
    return [layer.name for layer in model.layers if layer.name.startswith(("enc", "bottom"))]


def freeze_depth(model: keras.Model, mode: FreezeMode) -> list[str]:
    """Set ``trainable`` on the layers of a model built here, for fine-tuning.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_unet3d` or :func:`build_unet2d`, or an ensemble of them
        (each member frozen alike; names returned as ``member/layer``).
    mode : {"none", "encoder", "all_but_last"}
        ``"none"``: every layer trainable; ``"encoder"``: the layers of
        :func:`encoder_layer_names` frozen (their batch-norm layers then run in
        inference mode), the rest trainable; ``"all_but_last"``: only the final
        1x1 convolution (``head_conv``) trainable.

    Returns
    -------
    list of str
        Names of the layers left frozen. The model must be (re)compiled after
        this for the change to affect training.
    """
    nested = members_of(model)
    if nested != [model]:  # an ensemble: freeze every member alike
        model.trainable = True
        return [f"{net.name}/{name}" for net in nested for name in freeze_depth(net, mode)]
    names = [layer.name for layer in model.layers]
    if mode == "none":
        frozen: set[str] = set()
    elif mode == "encoder":
        frozen = set(encoder_layer_names(model))
        if not frozen:
            raise ValueError(f"model {model.name!r} has no encoder (enc*) layers")
    elif mode == "all_but_last":
        if "head_conv" not in names:
            raise ValueError(f"model {model.name!r} has no 'head_conv' layer")
        frozen = set(names) - {"head_conv"}
    else:
        raise ValueError(f"freeze mode must be 'none', 'encoder' or 'all_but_last', got {mode!r}")
    model.trainable = True
    for layer in model.layers:
        layer.trainable = layer.name not in frozen
    return [name for name in names if name in frozen]


def members_of(model: Any) -> list[Any]:
    """The member networks of an ensemble model (``[model]`` for any other network)."""
    nested = [layer for layer in model.layers if layer.name.startswith("member") and hasattr(layer, "layers")]
    return nested or [model]
