"""Hyper-parameters of the deepseg_sc networks: JSON-serialisable, frozen config dataclasses.

:class:`UNet3DConfig` drives :func:`lumbo_bids.model.network.build_unet3d` (``sct_deepseg_sc
-kernel 3d``) and :class:`UNet2DConfig` drives :func:`lumbo_bids.model.network.build_unet2d`
(SCT's ``*_ctr.h5`` centerline models); :data:`SCT_CTR_PARAMS` holds SCT's settings per
contrast. A model artifact stores ``config.to_dict()`` and rebuilds with ``from_dict``. The
network module re-exports these names (the artifact format dispatches through it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

__all__ = ["SCT_CTR_PARAMS", "SLICE_CONTEXTS", "UNet2DConfig", "UNet3DConfig"]

#: SCT's centerline-model settings per contrast (``core.py::find_centerline``,
#: ``dct_params_ctr``): (features, dilation_layers); depth is always 2.
SCT_CTR_PARAMS: dict[str, tuple[int, int]] = {
    "t2": (16, 2),
    "t2s": (8, 3),
    "t1": (24, 3),
    "dwi": (8, 2),
}


#: what a :class:`UNet3DConfig` kernel may see across slices (its ``slice_context``)
SLICE_CONTEXTS = ("3d", "2.5d", "2d")


class _JsonConfig:
    """JSON round trip shared by the config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
        kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class UNet3DConfig(_JsonConfig):
    """Hyper-parameters of the deepseg_sc 3D U-Net (defaults = SCT's).

    Attributes
    ----------
    base_filters : int
        Filters of the first convolution (SCT ``n_base_filters=16``); use e.g.
        4 for a model small enough to train on a CPU.
    depth : int
        Number of resolution levels (SCT 3, i.e. 2 poolings).
    in_channels, n_labels : int
        Input channels and output sigmoid maps (SCT 1 and 1).
    batch_norm : bool
        Batch normalisation after every convolution (SCT True).
    dropout : float
        Dropout rate after every ReLU; 0 (SCT) adds no Dropout layer.
    kernel_size, pool_size : int
        Convolution kernel and pooling / up-sampling factor (SCT 3 and 2).
    upsampling : {"nearest", "transpose"}
        ``UpSampling3D`` (SCT) or a learned ``Conv3DTranspose``.
    slice_context : {"3d", "2.5d", "2d"}
        What a convolution sees along the slice axis (the last spatial axis, inferior ->
        superior in RPI): ``"3d"`` (SCT's ``-kernel 3d``) every kernel and pooling is
        isotropic; ``"2d"`` kernels are ``k x k x 1`` and pooling ``p x p x 1``, so every axial
        slice is segmented on its own (SCT's ``-kernel 2d`` idea, in this U-Net); ``"2.5d"`` as
        ``"2d"`` except the first convolution, ``k x k x k``, which sees the neighbouring slices.
        In-plane convolutions cost a ``k``-th of the FLOPs, and thick-slice images carry little
        information across slices.
    patch_size : tuple of int
        Training patch in voxels (SCT 48x48x48 at 0.5 mm). The network itself
        accepts any spatial size divisible by :attr:`size_multiple`.
    """

    base_filters: int = 16
    depth: int = 3
    in_channels: int = 1
    n_labels: int = 1
    batch_norm: bool = True
    dropout: float = 0.0
    kernel_size: int = 3
    pool_size: int = 2
    upsampling: Literal["nearest", "transpose"] = "nearest"
    slice_context: Literal["3d", "2.5d", "2d"] = "3d"
    patch_size: tuple[int, int, int] = (48, 48, 48)

    def __post_init__(self) -> None:
        _check_common(self.base_filters, self.depth, self.dropout, self.pool_size)
        if self.upsampling not in ("nearest", "transpose"):
            raise ValueError(f"upsampling must be 'nearest' or 'transpose', got {self.upsampling!r}")
        if self.slice_context not in SLICE_CONTEXTS:
            raise ValueError(f"slice_context must be one of {SLICE_CONTEXTS}, got {self.slice_context!r}")
        _check_patch(self.patch_size, 3, self.size_multiple)

    def kernel(self, first: bool = False) -> tuple[int, int, int]:
        """The convolution kernel (the network's very first one when ``first``)."""
        k = self.kernel_size
        across = k if self.slice_context == "3d" or (first and self.slice_context == "2.5d") else 1
        return (k, k, across)

    @property
    def pool(self) -> tuple[int, int, int]:
        """The pooling / up-sampling factor per axis (none along the slices unless ``"3d"``)."""
        p = self.pool_size
        return (p, p, p if self.slice_context == "3d" else 1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (``pool_size ** (depth - 1)``)."""
        return self.pool_size ** (self.depth - 1)


@dataclass(frozen=True)
class UNet2DConfig(_JsonConfig):
    """Hyper-parameters of the deepseg_sc 2D centerline U-Net (``nn_architecture_ctr``).

    Attributes
    ----------
    base_filters : int
        SCT ``features`` (t2: 16, t2s: 8, t1: 24, dwi: 8).
    depth : int
        Down/up blocks (SCT 2).
    dilation_layers : int
        Bottleneck convolutions with dilation 1, 2, 4, ... (t2: 2, t2s: 3).
    in_channels, n_labels : int
        Input channels and output maps (SCT 1 and 1).
    batch_norm : bool
        Batch normalisation after every 3x3 convolution (SCT True).
    dropout : float
        Dropout after every ReLU (SCT builds with 0; the shipped models were
        trained with 0.4); 0 adds no Dropout layer.
    temperature : float
        Logits are divided by it before the sigmoid (SCT 1.0).
    patch_size : tuple of int
        Axial patch in pixels at 0.5 mm (SCT 80x80). The network accepts any
        size divisible by :attr:`size_multiple`.
    """

    base_filters: int = 16
    depth: int = 2
    dilation_layers: int = 2
    in_channels: int = 1
    n_labels: int = 1
    batch_norm: bool = True
    dropout: float = 0.0
    temperature: float = 1.0
    patch_size: tuple[int, int] = (80, 80)

    def __post_init__(self) -> None:
        _check_common(self.base_filters, self.depth, self.dropout, 2)
        if self.dilation_layers < 1:
            raise ValueError(f"dilation_layers must be >= 1, got {self.dilation_layers}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        _check_patch(self.patch_size, 2, self.size_multiple)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (``2 ** depth``)."""
        return 2**self.depth

    @classmethod
    def sct_ctr(cls, contrast: str, dropout: float = 0.0) -> UNet2DConfig:
        """Config of SCT's ``{contrast}_ctr.h5`` model (see :data:`SCT_CTR_PARAMS`)."""
        if contrast not in SCT_CTR_PARAMS:
            raise ValueError(f"unknown SCT contrast {contrast!r}; expected one of {sorted(SCT_CTR_PARAMS)}")
        features, dilation_layers = SCT_CTR_PARAMS[contrast]
        return cls(base_filters=features, dilation_layers=dilation_layers, dropout=dropout)


def _check_common(base_filters: int, depth: int, dropout: float, pool_size: int) -> None:
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if pool_size < 2:
        raise ValueError(f"pool_size must be >= 2, got {pool_size}")


def _check_patch(patch: Sequence[int], ndim: int, multiple: int) -> None:
    if len(patch) != ndim or any(int(s) < 1 or int(s) % multiple for s in patch):
        raise ValueError(f"patch_size {tuple(patch)} must have {ndim} sizes divisible by {multiple}")
