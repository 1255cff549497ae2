"""The networks a model artifact may name: ``architecture.name`` -> builder of the Keras model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Builder = Callable[[dict[str, Any]], Any]


def _network_builder(build: str, config_class: str) -> Builder:
    """A builder calling ``network.<build>(unet_config.<config_class>.from_dict(config))``, lazily
    (importing :mod:`.network` imports Keras)."""

    def builder(config: dict[str, Any]) -> Any:
        from . import network, unet_config

        return getattr(network, build)(getattr(unet_config, config_class).from_dict(config))

    return builder


#: architecture name -> ``builder(config_dict) -> keras.Model``; add entries for plugins / tests
ARCHITECTURES: dict[str, Builder] = {
    "unet3d": _network_builder("build_unet3d", "UNet3DConfig"),
    "unet2d": _network_builder("build_unet2d", "UNet2DConfig"),
}
