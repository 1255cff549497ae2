"""Per-image workflow: preprocess -> localise -> crop -> standardise -> segment -> native -> sink."""

from __future__ import annotations

from nipype.pipeline import engine as pe

from ..derivatives import image_output, source_entities
from ..interfaces.io import DerivativesDataSink
from ..interfaces.morphometry import CordMorphometrics, EvaluateMask
from ..interfaces.preproc import ToNative
from ..interfaces.segment import Postprocess, Segment, Standardise
from .preproc import init_anat_preproc_wf


def resolution_entity(resolution: float) -> str:
    """BIDS ``res`` label for a voxel size: 0.5 -> ``05mm``, 1.0 -> ``1mm``."""
    return f"{resolution:g}".replace(".", "") + "mm"


def init_anat_seg_wf(config, anat, models, name: str):
    """Segment one anatomical image and write its derivatives.

    Parameters
    ----------
    config : lumbo_bids.config.Config
    anat : lumbo_bids.utils.bids.AnatInput
    models : lumbo_bids.model.selection.ModelChoice
        The segmentation artifact (with its preprocessing plan) and the localiser to use.
    name : str
        Stable workflow name (the work dir is a cache keyed on it).
    """
    workflow = pe.Workflow(name=name)
    seg = models.segmentation
    resolution = config.resolution or seg.resolution
    crop_size = tuple(config.crop_size or seg.crop_size)
    use_mask = anat.mask is not None and not config.ignore_manual_centerline
    entities = source_entities(anat.entities)
    res = resolution_entity(resolution)

    preproc_wf = init_anat_preproc_wf(
        anat,
        resolution=resolution,
        crop_size=crop_size,
        use_mask=use_mask,
        localiser=(models.localiser, models.localiser_checksum),
        omp_nthreads=config.omp_nthreads,
    )
    centerline_method = "manual mask" if use_mask else f"automatic ({models.localiser_name})"
    standardise = pe.Node(Standardise(intensity=seg.intensity), name="standardise")
    segment = pe.Node(
        Segment(model=str(seg.path), model_checksum=seg.checksum, tta=config.tta, omp_nthreads=config.omp_nthreads),
        name="segment",
        mem_gb=2.0,
        n_procs=config.omp_nthreads,
    )
    if config.overlap is not None:
        segment.inputs.overlap = config.overlap
    postprocess = pe.Node(Postprocess(threshold=config.threshold or seg.threshold), name="postprocess")
    to_native = pe.Node(ToNative(reference_file=str(anat.path), threshold=0.5), name="to_native")

    workflow.connect([
        (preproc_wf, standardise, [("outputnode.out_stack", "in_stack")]),
        (standardise, segment, [("out_stack", "in_stack")]),
        (segment, postprocess, [("prob_stack", "prob_stack")]),
        (postprocess, to_native, [("out_stack", "in_stack")]),
        (preproc_wf, to_native, [("outputnode.geometry_json", "geometry_json")]),
    ])  # fmt: skip

    # -- derivatives ------------------------------------------------------------------
    sinks = []

    def sink(node_name, output, **kwargs):
        node = pe.Node(
            DerivativesDataSink(
                source_file=str(anat.path),
                bids_dir=str(config.bids_dir),
                output_dir=str(config.output_dir),
                entities=entities,
                **image_output(output, anat.contrast, res),
                **kwargs,
            ),
            name=node_name,
            run_without_submitting=True,
        )
        sinks.append(node)
        return node

    resolution_text = f"{resolution:g} mm isotropic, SCT 'RPI' (nibabel LAS) orientation"
    model_meta = {
        "Name": seg.name,
        "Version": seg.version,
        "Checksum": f"sha256:{seg.checksum}",
    }
    ds_mask = sink(
        "ds_mask",
        "mask",
        metadata={
            "Type": "ROI",
            "SpatialReference": "orig",
            "Manual": False,
            "Description": "Spinal cord segmentation on the source image's native grid.",
            "Model": model_meta,
            "Threshold": config.threshold or seg.threshold,
            "CenterlineMethod": centerline_method,
            "TestTimeAugmentation": bool(config.tta),
        },
    )
    ds_preproc = sink(
        "ds_preproc",
        "preproc",
        metadata={
            "SpatialReference": "orig",
            "Resolution": resolution_text,
            "SkullStripped": False,
            "Description": "Reoriented, resampled and cropped around the cord centerline (axis-aligned bounding box of the per-slice crop).",
            "CropSize": list(crop_size),
        },
    )
    ds_centerline = sink(
        "ds_centerline",
        "centerline",
        metadata={
            "Type": "ROI",
            "SpatialReference": "orig",
            "Resolution": resolution_text,
            "Description": f"Cord centerline, one voxel per axial slice; method: {centerline_method}.",
        },
    )
    ds_centerline_csv = sink("ds_centerline_csv", "centerline_csv", json_sidecar=False)
    workflow.connect([
        (to_native, ds_mask, [("out_file", "in_file")]),
        (preproc_wf, ds_preproc, [("outputnode.out_file", "in_file")]),
        (preproc_wf, ds_centerline, [("outputnode.centerline_file", "in_file")]),
        (preproc_wf, ds_centerline_csv, [("outputnode.centerline_csv", "in_file")]),
    ])  # fmt: skip
    if anat.mask is not None:
        ds_preproc_mask = sink(
            "ds_preproc_mask",
            "preproc_mask",
            extra_sources=[str(anat.mask)],
            metadata={
                "Type": "ROI",
                "SpatialReference": "orig",
                "Resolution": resolution_text,
                "Manual": True,
                "Description": "Manual cord mask on the preprocessed grid.",
            },
        )
        workflow.connect(preproc_wf, "outputnode.mask_file", ds_preproc_mask, "in_file")
    # -- morphometrics, and evaluation against the manual mask when there is one --------------
    morphometrics = pe.Node(CordMorphometrics(), name="morphometrics")
    ds_morphometrics = sink("ds_morphometrics", "morphometrics")
    workflow.connect([
        (to_native, morphometrics, [("out_file", "in_file")]),
        (morphometrics, ds_morphometrics, [("out_tsv", "in_file"), ("metadata", "metadata")]),
    ])  # fmt: skip
    if anat.mask is not None:
        evaluate = pe.Node(EvaluateMask(), name="evaluate")
        ds_evaluation = sink("ds_evaluation", "evaluation", extra_sources=[str(anat.mask)])
        workflow.connect([
            (to_native, evaluate, [("out_file", "in_file")]),
            (preproc_wf, evaluate, [("outputnode.mask_native", "reference_file")]),
            (evaluate, ds_evaluation, [("out_tsv", "in_file"), ("metadata", "metadata")]),
        ])  # fmt: skip
    if config.save_probseg:
        to_native_prob = pe.Node(ToNative(reference_file=str(anat.path)), name="to_native_prob")
        probseg_meta = {"SpatialReference": "orig", "Model": model_meta, "Description": "Cord probability."}
        ds_probseg = sink("ds_probseg", "probseg", metadata=probseg_meta)
        workflow.connect([
            (segment, to_native_prob, [("prob_stack", "in_stack")]),
            (preproc_wf, to_native_prob, [("outputnode.geometry_json", "geometry_json")]),
            (to_native_prob, ds_probseg, [("out_file", "in_file")]),
        ])  # fmt: skip
    # what the input checks found doubtful goes into every sidecar of this image
    for node in sinks:
        if node.inputs.json_sidecar:
            workflow.connect(preproc_wf, "outputnode.input_warnings", node, "input_warnings")
    return workflow
