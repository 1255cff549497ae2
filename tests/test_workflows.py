"""Building the participant workflow (no run): every image gets its nodes, and every sink writes
the name that the reports read back (one table: ``derivatives.IMAGE_OUTPUTS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumbo_bids.cli.parser import build_parser
from lumbo_bids.config import Config
from lumbo_bids.derivatives import IMAGE_OUTPUTS, derivative_path, image_output_path
from lumbo_bids.interfaces.io import DerivativesDataSink
from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects
from lumbo_bids.workflows.base import anat_wf_name, init_lumbo_wf, subject_wf_name
from lumbo_bids.workflows.outputs import resolution_entity

SINK_OUTPUT = {  # node name -> IMAGE_OUTPUTS key
    "ds_mask": "mask", "ds_probseg": "probseg", "ds_preproc": "preproc", "ds_preproc_mask": "preproc_mask",
    "ds_centerline": "centerline", "ds_centerline_csv": "centerline_csv",
    "ds_morphometrics": "morphometrics", "ds_evaluation": "evaluation",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(ds_spine_mini, tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    args = build_parser().parse_args(
        [str(ds_spine_mini), str(root / "out"), "participant", "-w", str(root / "work"), "--save-probseg"]
    )
    config = Config.from_namespace(args)
    layout = build_layout(ds_spine_mini)
    inputs = collect_anat(layout, select_subjects(layout, None), None, {}, config.labels_dir)
    return config, inputs, init_lumbo_wf(config, inputs)


def test_every_image_has_its_workflow_and_sinks(built):
    config, inputs, workflow = built
    anats = [anat for items in inputs.values() for anat in items]
    assert len(anats) == 8
    names = workflow.list_node_names()
    for anat in anats:
        prefix = f"{subject_wf_name(anat.subject)}.{anat_wf_name(anat)}."
        mine = {n.split(".")[-1] for n in names if n.startswith(prefix)}
        expected = {"ds_mask", "ds_preproc", "ds_centerline", "ds_centerline_csv", "ds_morphometrics", "ds_probseg"}
        if anat.mask is not None:
            expected |= {"ds_preproc_mask", "ds_evaluation", "evaluate"}
        assert expected <= mine, (anat.path.name, expected - mine)
        assert ("ds_evaluation" in mine) == (anat.mask is not None)


def test_sinks_write_the_names_the_reports_read(built):
    config, inputs, workflow = built
    by_wf = {anat_wf_name(anat): anat for items in inputs.values() for anat in items}
    res = resolution_entity(0.5)
    checked = set()
    for name in workflow.list_node_names():
        node = workflow.get_node(name)
        if not isinstance(node.interface, DerivativesDataSink):
            continue
        anat, key = by_wf[name.split(".")[1]], SINK_OUTPUT[name.split(".")[-1]]
        i = node.inputs
        extra = {k: getattr(i, k) for k in ("space", "res", "label", "desc") if isinstance(getattr(i, k), str)}
        written = derivative_path(Path(i.output_dir), i.entities, i.suffix, i.extension, **extra)
        assert written == image_output_path(config.output_dir, anat, key, res), name
        checked.add((anat.suffix, key))
    assert {key for _, key in checked} == set(IMAGE_OUTPUTS)
    # the T2star input: its preprocessed image (crop box of the QC figure) is found by the report
    assert ("T2star", "preproc") in checked


def test_t2star_outputs_are_named_with_the_model_contrast(built, tmp_path):
    _, inputs, _ = built
    (anat,) = [a for items in inputs.values() for a in items if a.suffix == "T2star"]
    assert image_output_path(tmp_path, anat, "preproc", "05mm").name.endswith("_res-05mm_desc-preproc_T2starw.nii.gz")
    assert image_output_path(tmp_path, anat, "mask", extension=".json").name.endswith(
        "_space-orig_label-SC_desc-T2starw_mask.json"
    )
    with pytest.raises(ValueError, match="resolution"):
        image_output_path(tmp_path, anat, "preproc")
