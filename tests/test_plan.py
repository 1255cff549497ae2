"""ModelPlan (lumbo_bids.plan): the one typed reader and writer of a manifest's preprocessing and
inference sections, and the one place a run's overrides are applied."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from types import SimpleNamespace

import pytest

from lumbo_bids.model.artifact import load_artifact
from lumbo_bids.model.selection import SHIPPED_LOCALISER, SHIPPED_SEGMENTATION
from lumbo_bids.plan import DEFAULT_THRESHOLD, ModelPlan


def test_the_plan_comes_from_the_manifest_and_is_frozen():
    artifact = load_artifact(SHIPPED_SEGMENTATION)
    plan, manifest = artifact.plan, artifact.manifest
    assert plan.patch_size == tuple(manifest["preprocessing"]["patch_size"])
    assert (plan.resolution, plan.crop_size) == (0.5, (64, 64))
    assert (plan.threshold, plan.overlap, plan.blend) == tuple(
        manifest["inference"][k] for k in ("threshold", "overlap", "blend")
    )
    assert plan.intensity_params == manifest["preprocessing"]["intensity"]
    assert plan.contrasts == tuple(manifest["contrasts"])
    with pytest.raises(FrozenInstanceError):
        plan.threshold = 0.1
    with pytest.raises(TypeError):
        plan.intensity["method"] = "nyul"


@pytest.mark.parametrize("model", [SHIPPED_SEGMENTATION, SHIPPED_LOCALISER])
def test_the_sections_it_writes_are_the_manifests_it_read(model):
    """A fine-tuned or ensembled model's manifest is written from the plan: the shipped manifests
    come back key for key (a localiser has no crop)."""
    manifest = json.loads((model / "model.json").read_text())
    sections = load_artifact(model).plan.sections()
    assert sections == {"preprocessing": manifest["preprocessing"], "inference": manifest["inference"]}
    assert list(sections["preprocessing"]) == list(manifest["preprocessing"])


def test_a_plan_without_inference_settings_gets_the_defaults_and_its_networks_patch():
    manifest = {"preprocessing": {"resolution_mm": 1.0, "intensity": {}}, "architecture": {"config": {"patch_size": [64, 64]}}}
    plan = ModelPlan.from_manifest(manifest)
    assert (plan.threshold, plan.overlap, plan.blend, plan.intensity_params) == (DEFAULT_THRESHOLD, 0.5, "gaussian", {})
    assert (plan.patch_size, plan.crop_size, plan.resolution) == ((64, 64), None, 1.0)


def test_overrides_are_applied_where_set_and_only_those_asked_for():
    plan = load_artifact(SHIPPED_SEGMENTATION).plan
    config = SimpleNamespace(resolution=None, crop_size=(80, 80), threshold=0.3, overlap=None)
    changed = plan.with_overrides(config)
    assert (changed.resolution, changed.crop_size, changed.threshold, changed.overlap) == (0.5, (80, 80), 0.3, plan.overlap)
    assert plan.with_overrides(config, only=("resolution", "crop_size")).threshold == plan.threshold
    nothing = SimpleNamespace(resolution=None, crop_size=None, threshold=None, overlap=None)
    assert plan.with_overrides(nothing) is plan
    assert plan.with_overrides(SimpleNamespace()) is plan  # a config without these options


def test_a_plan_travels_to_a_node_and_back():
    plan = load_artifact(SHIPPED_SEGMENTATION).plan.replace(
        threshold=0.4, intensity={"method": "nyul", "percentiles": [1, 99], "standard": [0, 1]}
    )
    data = json.loads(json.dumps(plan.to_dict()))  # what a Nipype node's traits.Dict holds
    assert ModelPlan.from_dict(data) == plan


def test_the_inference_window_is_read_written_checked_and_used_by_the_predictor(monkeypatch):
    """``inference.window``: the sliding window of inference (the shipped network tiles its 64x64
    crop with one 64x64x48 window, not 2x2 of its 48^3 training patches); absent, the patch."""
    import numpy as np

    from lumbo_bids.model.manifest import manifest_problem
    from lumbo_bids.model.predictor import Predictor

    artifact = load_artifact(SHIPPED_SEGMENTATION)
    plan = artifact.plan
    assert plan.window == (64, 64, 48) and plan.inference_window == (64, 64, 48) and plan.patch_size == (48, 48, 48)
    assert plan.replace(window=None).inference_window == plan.patch_size
    assert "window" not in plan.replace(window=None).sections()["inference"]
    for bad in ([64, 64], [64, 0, 48], [64.0, 64, 48], "64"):
        manifest = json.loads(json.dumps(artifact.manifest))
        manifest["inference"]["window"] = bad
        assert "inference.window" in manifest_problem(manifest)
    seen = []

    def recorder(model, batch_size=4):  # a fully convolutional stand-in: records the windows it is given
        def predict(batch):
            seen.append(tuple(batch.shape[1:4]))
            return np.full(batch.shape, 0.75, dtype=np.float32)

        return predict

    monkeypatch.setattr("lumbo_bids.model.inference.keras_predict_fn", recorder)
    stack = np.zeros((64, 64, 90), dtype=np.float32)
    probability = Predictor(object(), plan).probability(stack)
    assert probability.shape == stack.shape and np.allclose(probability, 0.75)
    assert set(seen) == {(64, 64, 48)}
    seen.clear()
    Predictor(object(), plan.replace(window=None)).probability(stack)
    assert set(seen) == {(48, 48, 48)}
