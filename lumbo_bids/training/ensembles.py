"""Make a seed-ensemble artifact (architecture ``"ensemble"``, :mod:`lumbo_bids.model.architectures`)
from member artifacts trained by one recipe with different seeds (``scripts/make_ensemble.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..model.architectures import build_ensemble, normalised_config
from ..model.network import members_of


def _same_plan(artifacts: Sequence[Any]) -> tuple[int, str] | None:
    """``(member, what)``: the first member whose architecture / preprocessing / inference / task /
    contrasts differ from member 0's; ``None`` when they all agree."""

    def arch(a: Any) -> tuple[str, dict[str, Any]]:
        return a.architecture, normalised_config(a.architecture, a.architecture_config)

    def described(a: Any) -> dict[str, Any]:
        return {**a.plan.sections(), "task": a.task, "contrasts": a.contrasts}

    first = artifacts[0]
    for k, other in enumerate(artifacts[1:], start=1):
        if arch(other) != arch(first):
            return k, "differs from member 0 in 'architecture'"
        for key, value in described(first).items():
            if described(other)[key] != value:
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
    from ..model.artifact import ArtifactError, load_artifact, save_artifact

    if len(members) < 2:
        raise ArtifactError(out_dir, f"an ensemble needs at least 2 members, got {len(members)}")
    loaded = [load_artifact(m) for m in members]
    if differs := _same_plan(loaded):
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
    plan = loaded[0].plan if overlap is None else loaded[0].plan.replace(overlap=float(overlap))
    manifest = {key: first[key] for key in ("name", "version", "task", "contrasts") if key in first}
    manifest.update(
        **plan.sections(),
        architecture={"name": "ensemble", "config": config},
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
