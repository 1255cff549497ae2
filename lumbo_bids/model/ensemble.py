"""A seed ensemble: several networks of one architecture whose probabilities are averaged.

Networks trained by the same recipe with different seeds disagree most where the data say least
(an unseen contrast, the conus, thick slices); their mean is steadier than any one of them
(nnU-Net ships five folds for the same reason). The ensemble is a single Keras model, the
architecture ``"ensemble"`` of a model artifact: its members are nested models (``member0``,
``member1``, ...) fed the same patch, and an ``Average`` layer gives the output. Everything that
takes an artifact (the participant level, the group level's fine-tuning, the scripts) takes an
ensemble unchanged; inference costs one forward pass per member.

Architecture config::

    {"members": 2, "member": {"name": "unet3d", "config": {...}}}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

MAX_MEMBERS = 10


def member_spec(config: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """``(number of members, member architecture, member config)`` of an ensemble config.

    Raises
    ------
    ValueError
        A config without a positive ``members`` count (at most ``MAX_MEMBERS``) or a ``member``
        naming a known, non-ensemble architecture with a config object.
    """
    from .architectures import ARCHITECTURES

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

    from .architectures import ARCHITECTURES

    n, name, member_config = member_spec(config)
    members = []
    for k in range(n):
        net = ARCHITECTURES[name](dict(member_config))
        members.append(keras.Model(net.input, net.output, name=f"member{k}"))
    inputs = keras.Input(members[0].inputs[0].shape[1:], name="input")
    outputs = [m(inputs) for m in members]
    mean = outputs[0] if n == 1 else keras.layers.Average(name="mean")(outputs)
    return keras.Model(inputs, mean, name="ensemble")


def members_of(model: Any) -> list[Any]:
    """The member networks of an ensemble model (``[model]`` for any other network)."""
    nested = [layer for layer in model.layers if layer.name.startswith("member") and hasattr(layer, "layers")]
    return nested or [model]


def _same_plan(manifests: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """``(member, what)``: the first member whose architecture / preprocessing / inference / task /
    contrasts differ from member 0's; ``None`` when they all agree."""
    from .architectures import normalised_config

    def arch(m: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return m["architecture"]["name"], normalised_config(m["architecture"]["name"], m["architecture"]["config"])

    first = manifests[0]
    for k, other in enumerate(manifests[1:], start=1):
        if arch(other) != arch(first):
            return k, "differs from member 0 in 'architecture'"
        for key in ("preprocessing", "inference", "task", "contrasts"):
            if other.get(key) != first.get(key):
                return k, f"differs from member 0 in {key!r}"
    return None


def ensemble_artifact(
    members: Sequence[os.PathLike | str], out_dir: os.PathLike | str, overlap: float | None = None, reproduce: str = ""
) -> Any:
    """Write an ensemble artifact from member artifacts trained by one recipe.

    The members must share architecture, task, contrasts, preprocessing (the intensity plan
    included: a synthetic-only recipe's plan does not depend on the seed) and inference settings;
    the ensemble keeps them, with the sliding-window ``overlap`` replaced when given (inference
    costs one pass per member). The model card lists every member's card and checksum.

    Returns
    -------
    Path
        The artifact directory.

    Raises
    ------
    ArtifactError
        A member that cannot be loaded, or members that differ.
    """
    from .architectures import normalised_config
    from .artifact import ArtifactError, load_artifact, save_artifact

    if len(members) < 2:
        raise ArtifactError(out_dir, f"an ensemble needs at least 2 members, got {len(members)}")
    loaded = [load_artifact(m) for m in members]
    if differs := _same_plan([a.manifest for a in loaded]):
        raise ArtifactError(loaded[differs[0]].origin, f"{differs[1]} ({loaded[0].origin})")
    if loaded[0].architecture == "ensemble":
        raise ArtifactError(loaded[0].origin, "members must be single networks, not ensembles")
    first = loaded[0].manifest
    name = first["architecture"]["name"]
    config = {
        "members": len(loaded),
        "member": {"name": name, "config": normalised_config(name, first["architecture"]["config"])},
    }
    model = build_ensemble(config)
    for net, artifact in zip(members_of(model), loaded):
        net.set_weights(artifact.build_model().get_weights())
    inference = dict(first["inference"])
    if overlap is not None:
        inference["overlap"] = float(overlap)
    manifest = {key: first[key] for key in ("name", "version", "task", "contrasts", "preprocessing") if key in first}
    manifest.update(
        architecture={"name": "ensemble", "config": config},
        inference=inference,
        training={
            "purpose": f"mean of {len(loaded)} networks trained by one recipe with different seeds",
            "reproduce": reproduce,
            "members": [
                {
                    "path": str(a.origin),
                    "checksum": a.checksum,
                    "seed": a.manifest.get("training", {}).get("seed"),
                    "training": a.manifest.get("training", {}),
                }
                for a in loaded
            ],
        },
    )
    return save_artifact(model, out_dir, manifest)
