"""The sinks of one image: every derivative it writes, named from ``derivatives.IMAGE_OUTPUTS``."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..derivatives import IMAGE_OUTPUTS, image_output, source_entities
from ..interfaces.io import DerivativesDataSink

#: outputs whose sidecar metadata arrive on an inputnode field of their own (computed by a node)
META_FIELDS = {"morphometrics": "morphometrics_meta", "evaluation": "evaluation_meta"}
#: the mask's sidecar also gets the QC flags and measures (``QCFlags``, ``QCMeasures``: lumbo_bids.qc)
QC_FIELD = "qc_meta"
#: inputnode fields: one per output of ``IMAGE_OUTPUTS`` (same name), the metadata, the warnings
FIELDS = [*IMAGE_OUTPUTS, *META_FIELDS.values(), QC_FIELD, "input_warnings"]


def merge_metadata(static: dict, computed: dict) -> dict:
    """The sidecar content known when the workflow is built, then what a node computed."""
    return {**static, **computed}


def resolution_entity(resolution: float) -> str:
    """BIDS ``res`` label for a voxel size: 0.5 -> ``05mm``, 1.0 -> ``1mm``."""
    return f"{resolution:g}".replace(".", "") + "mm"


def sidecar_metadata(config, anat, seg, plan, centerline_method: str) -> dict[str, dict]:
    """What each derivative's JSON sidecar says besides ``Sources`` (by inputnode field); ``plan``:
    the model's, with the run's overrides."""
    resolution_text = f"{plan.resolution:g} mm isotropic, SCT 'RPI' (nibabel LAS) orientation"
    model = {"Name": seg.name, "Version": seg.version, "Checksum": f"sha256:{seg.checksum}"}
    on_grid = {"SpatialReference": "orig", "Resolution": resolution_text}
    return {
        "mask": {
            "Type": "ROI", "SpatialReference": "orig", "Manual": False,
            "Description": "Spinal cord segmentation on the source image's native grid.",
            "Model": model, "Threshold": plan.threshold,
            "CenterlineMethod": centerline_method, "TestTimeAugmentation": bool(config.tta),
        },
        "preproc": {
            **on_grid, "SkullStripped": False, "CropSize": list(plan.crop_size),
            "Description": "Reoriented, resampled and cropped around the cord centerline "
            "(axis-aligned bounding box of the per-slice crop).",
        },
        "centerline": {
            "Type": "ROI", **on_grid,
            "Description": f"Cord centerline, one voxel per axial slice; method: {centerline_method}.",
        },
        "preproc_mask": {"Type": "ROI", **on_grid, "Manual": True, "Description": "Manual cord mask on the preprocessed grid."},
        "probseg": {"SpatialReference": "orig", "Model": model, "Description": "Cord probability."},
    }  # fmt: skip


def init_ds_anat_wf(config, anat, seg, plan, centerline_method: str, name: str = "ds_wf"):
    """One :class:`~lumbo_bids.interfaces.io.DerivativesDataSink` per output of ``anat``.

    Sinks for the manual-mask outputs (``preproc_mask``, ``evaluation``) exist only when the
    image has a mask, ``probseg`` only with ``--save-probseg``. Every JSON sidecar also gets
    what the input checks found doubtful (``input_warnings``).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=FIELDS), name="inputnode")
    metadata = sidecar_metadata(config, anat, seg, plan, centerline_method)
    wanted = {"preproc_mask": anat.mask is not None, "evaluation": anat.mask is not None, "probseg": config.save_probseg}
    for field in IMAGE_OUTPUTS:
        if not wanted.get(field, True):
            continue
        extra_sources = [str(anat.mask)] if field in ("preproc_mask", "evaluation") else []
        sink = pe.Node(
            DerivativesDataSink(
                source_file=str(anat.path),
                bids_dir=str(config.bids_dir),
                output_dir=str(config.output_dir),
                entities=source_entities(anat.entities),
                json_sidecar=field != "centerline_csv",
                extra_sources=extra_sources,
                run_id=config.run_uuid,
                **image_output(field, anat.contrast, resolution_entity(plan.resolution)),
            ),
            name=f"ds_{field}",
            run_without_submitting=True,
        )
        if field in metadata:
            sink.inputs.metadata = metadata[field]
        workflow.connect(inputnode, field, sink, "in_file")
        if field in META_FIELDS:
            workflow.connect(inputnode, META_FIELDS[field], sink, "metadata")
        if field == "mask":  # the static sidecar content plus the QC flags
            merge = pe.Node(
                niu.Function(input_names=["static", "computed"], output_names=["metadata"], function=merge_metadata),
                name="mask_metadata",
                run_without_submitting=True,
            )
            merge.inputs.static = metadata["mask"]
            workflow.connect([(inputnode, merge, [(QC_FIELD, "computed")]), (merge, sink, [("metadata", "metadata")])])
        if sink.inputs.json_sidecar:
            workflow.connect(inputnode, "input_warnings", sink, "input_warnings")
    return workflow
