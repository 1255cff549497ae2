"""The in-memory Preprocessor gives the arrays that the participant level's preprocessing
workflow (Nipype nodes, files in between) gives, on real images: mask and localiser centerlines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DS_SPINE_MINI

from lumbo_bids.geometry import PreprocGeometry, to_native
from lumbo_bids.model.selection import SHIPPED_LOCALISER
from lumbo_bids.preprocess import Preprocessor
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects
from lumbo_bids.utils.images import read_volume
from lumbo_bids.workflows.preproc import init_anat_preproc_wf


@pytest.fixture(scope="module")
def anats():
    layout = build_layout(DS_SPINE_MINI)
    found = collect_anat(layout, select_subjects(layout, ["sctTesting"]), None, {}, DS_SPINE_MINI / "derivatives" / "labels")
    return {anat.suffix: anat for anat in found["sctTesting"]}


def _run_workflow(anat, use_mask: bool, base_dir: Path) -> dict:
    wf = init_anat_preproc_wf(anat, use_mask=use_mask, localiser=(str(SHIPPED_LOCALISER), "test"))
    wf.base_dir = str(base_dir)
    graph = wf.run(plugin="Linear")
    (crop,) = [node for node in graph.nodes() if node.name == "crop"]
    return crop.result.outputs.get()


@pytest.mark.parametrize("suffix, use_mask", [("T2w", True), ("T1w", False)], ids=["manual-mask", "localiser"])
def test_preprocessor_equals_the_preprocessing_workflow(anats, suffix, use_mask, tmp_path):
    anat = anats[suffix]
    nodes = _run_workflow(anat, use_mask, tmp_path)
    data, affine, _ = read_volume(anat.path)
    mask, _, _ = read_volume(anat.mask)
    case = Preprocessor(0.5, (64, 64), SHIPPED_LOCALISER).run_case(data, affine, mask, use_mask=use_mask)
    assert PreprocGeometry.from_dict(json.loads(Path(nodes["geometry_json"]).read_text())) == case.geometry
    np.testing.assert_allclose(np.load(nodes["out_stack"]), case.stack, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(np.load(nodes["mask_stack"]), case.mask_stack)
    # and the crop holds the cord: the cropped manual mask comes back to native space intact
    back = to_native(case.mask_stack, case.geometry, threshold=0.5)
    assert back.shape == data.shape[:3] and (back & (mask > 0.5)).sum() >= 0.95 * (mask > 0.5).sum()


def test_without_mask_or_localiser_there_is_no_centerline(anats):
    data, affine, _ = read_volume(anats["T2w"].path)
    with pytest.raises(ValueError, match="localiser"):
        Preprocessor().run_case(data, affine)
