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


def normalised_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the defaults of its config class filled in (older manifests omit newer keys)."""
    from . import unet_config

    classes = {"unet3d": unet_config.UNet3DConfig, "unet2d": unet_config.UNet2DConfig}
    return classes[name].from_dict(dict(config)).to_dict() if name in classes else dict(config)


def _ensemble(config: dict[str, Any]) -> Any:
    """The mean of several networks (:func:`lumbo_bids.model.ensemble.build_ensemble`)."""
    from .ensemble import build_ensemble

    return build_ensemble(config)


#: architecture name -> ``builder(config_dict) -> keras.Model``; add entries for plugins / tests
ARCHITECTURES: dict[str, Builder] = {
    "unet3d": _network_builder("build_unet3d", "UNet3DConfig"),
    "unet2d": _network_builder("build_unet2d", "UNet2DConfig"),
    "ensemble": _ensemble,
}
