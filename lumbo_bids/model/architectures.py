"""The networks a model artifact may name: ``architecture.name`` -> builder of the Keras model.

A seed ensemble (architecture ``"ensemble"``) is several networks of one architecture whose
probabilities are averaged: networks trained by the same recipe with different seeds disagree
most where the data say least (an unseen contrast, the conus, thick slices), and their mean is
steadier than any one of them (nnU-Net ships five folds for the same reason). It is a single
Keras model: its members are nested models (``member0``, ``member1``, ...) fed the same patch,
and an ``Average`` layer gives the output, so everything that takes an artifact takes an
ensemble unchanged; inference costs one forward pass per member. Its config::

    {"members": 2, "member": {"name": "unet3d", "config": {...}}}

Ensembles are made from trained members by :func:`lumbo_bids.training.ensembles.ensemble_artifact`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Builder = Callable[[dict[str, Any]], Any]
MAX_MEMBERS = 10


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


def member_spec(config: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """``(number of members, member architecture, member config)`` of an ensemble config.

    Raises
    ------
    ValueError
        A config without a positive ``members`` count (at most ``MAX_MEMBERS``) or a ``member``
        naming a known, non-ensemble architecture with a config object.
    """
    n, member = config.get("members"), config.get("member")
    if not (type(n) is int and 1 <= n <= MAX_MEMBERS):
        raise ValueError(f"'members' must be an integer in [1, {MAX_MEMBERS}], got {n!r}")
    if not (isinstance(member, dict) and isinstance(member.get("config"), dict)):
        raise ValueError("'member' must be an object with 'name' and 'config'")
    name = member.get("name")
    if name not in ARCHITECTURES or name == "ensemble":
        raise ValueError(f"unknown member architecture {name!r}")
    return n, name, member["config"]


def build_ensemble(config: dict[str, Any]) -> Any:
    """The Keras model of an ensemble config: the mean of ``members`` networks on one input."""
    import keras

    n, name, member_config = member_spec(config)
    members = []
    for k in range(n):
        net = ARCHITECTURES[name](dict(member_config))
        members.append(keras.Model(net.input, net.output, name=f"member{k}"))
    inputs = keras.Input(members[0].inputs[0].shape[1:], name="input")
    outputs = [m(inputs) for m in members]
    mean = outputs[0] if n == 1 else keras.layers.Average(name="mean")(outputs)
    return keras.Model(inputs, mean, name="ensemble")


#: architecture name -> ``builder(config_dict) -> keras.Model``; add entries for plugins / tests
ARCHITECTURES: dict[str, Builder] = {
    "unet3d": _network_builder("build_unet3d", "UNet3DConfig"),
    "unet2d": _network_builder("build_unet2d", "UNet2DConfig"),
    "ensemble": build_ensemble,
}
