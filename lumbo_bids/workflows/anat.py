"""Per-image workflow: preprocess -> localise -> crop -> standardise -> segment -> native -> sink."""

from __future__ import annotations

from nipype.pipeline import engine as pe

from ..interfaces.morphometry import CordMorphometrics, EvaluateMask
from ..interfaces.preproc import ToNative
from ..interfaces.qc import QCFlags
from ..interfaces.segment import Postprocess, Segment, Standardise
from ..options import MODEL_NODE_MEM_GB
from ..utils.images import MASK_THRESHOLD
from .outputs import init_ds_anat_wf
from .preproc import init_anat_preproc_wf


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
    plan = seg.plan.with_overrides(config)  # the run's --resolution, --crop-size, --threshold, --overlap
    use_mask = anat.mask is not None and not config.ignore_manual_centerline

    preproc_wf = init_anat_preproc_wf(
        anat,
        resolution=plan.resolution,
        crop_size=plan.crop_size,
        use_mask=use_mask,
        localiser=(models.localiser, models.localiser_checksum),
        omp_nthreads=config.omp_nthreads,
    )
    centerline_method = "manual mask" if use_mask else f"automatic ({models.localiser_name})"
    standardise, segment, postprocess, to_native = _segmentation_nodes(config, anat, seg, plan)

    workflow.connect([
        (preproc_wf, standardise, [("outputnode.out_stack", "in_stack")]),
        (standardise, segment, [("out_stack", "in_stack")]),
        (segment, postprocess, [("prob_stack", "prob_stack")]),
        (postprocess, to_native, [("out_stack", "in_stack")]),
        (preproc_wf, to_native, [("outputnode.geometry_json", "geometry_json")]),
    ])  # fmt: skip

    # -- morphometrics, evaluation against the manual mask, probability: then the sinks -------
    morphometrics = pe.Node(CordMorphometrics(), name="morphometrics")
    ds_wf = init_ds_anat_wf(config, anat, seg, plan, centerline_method)
    workflow.connect([
        (to_native, morphometrics, [("out_file", "in_file")]),
        (to_native, ds_wf, [("out_file", "inputnode.mask")]),
        (morphometrics, ds_wf, [("out_tsv", "inputnode.morphometrics"), ("metadata", "inputnode.morphometrics_meta")]),
        (preproc_wf, ds_wf, [
            ("outputnode.out_file", "inputnode.preproc"),
            ("outputnode.centerline_file", "inputnode.centerline"),
            ("outputnode.centerline_csv", "inputnode.centerline_csv"),
            ("outputnode.input_warnings", "inputnode.input_warnings"),
        ]),
    ])  # fmt: skip
    _connect_qc_flags(workflow, preproc_wf, segment, postprocess, to_native, ds_wf, use_mask)
    if anat.mask is not None:
        _connect_evaluation(workflow, anat, preproc_wf, to_native, ds_wf)
    if config.save_probseg:
        _connect_probseg(workflow, anat, preproc_wf, segment, ds_wf)
    return workflow


def _segmentation_nodes(config, anat, seg, plan):
    """Standardise -> segment -> post-process -> back to the source grid, as ``plan`` says."""
    plan_dict = plan.to_dict()
    standardise = pe.Node(Standardise(plan=plan_dict), name="standardise")
    segment = pe.Node(
        Segment(
            model=str(seg.path), model_checksum=seg.checksum, plan=plan_dict, tta=config.tta, omp_nthreads=config.omp_nthreads
        ),
        name="segment",
        mem_gb=MODEL_NODE_MEM_GB,
        n_procs=config.omp_nthreads,
    )
    postprocess = pe.Node(Postprocess(plan=plan_dict), name="postprocess")
    to_native = pe.Node(ToNative(reference_file=str(anat.path), threshold=MASK_THRESHOLD), name="to_native")
    return standardise, segment, postprocess, to_native


def _connect_qc_flags(workflow, preproc_wf, segment, postprocess, to_native, ds_wf, use_mask: bool) -> None:
    """QC failure flags (:mod:`lumbo_bids.qc`) from the probability, the mask (also as delivered,
    on the source grid) and the crop."""
    qc_flags = pe.Node(QCFlags(), name="qc_flags")
    workflow.connect([
        (segment, qc_flags, [("prob_stack", "prob_stack")]),
        (postprocess, qc_flags, [("out_stack", "mask_stack")]),
        (to_native, qc_flags, [("out_file", "native_mask")]),
        (preproc_wf, qc_flags, [("outputnode.geometry_json", "geometry_json"), ("outputnode.out_stack", "image_stack")]),
        (qc_flags, ds_wf, [("metadata", "inputnode.qc_meta")]),
    ])  # fmt: skip
    support = ("outputnode.mask_stack", "support_stack") if use_mask else ("outputnode.heatmap_file", "heatmap_file")
    workflow.connect(preproc_wf, support[0], qc_flags, support[1])  # where the centerline was seen


def _connect_evaluation(workflow, anat, preproc_wf, to_native, ds_wf) -> None:
    """The mask scored against the manual mask, on the source grid."""
    evaluate = pe.Node(EvaluateMask(image_file=str(anat.path)), name="evaluate")
    workflow.connect([
        (to_native, evaluate, [("out_file", "in_file")]),
        (preproc_wf, evaluate, [("outputnode.mask_native", "reference_file")]),
        (preproc_wf, ds_wf, [("outputnode.mask_file", "inputnode.preproc_mask")]),
        (evaluate, ds_wf, [("out_tsv", "inputnode.evaluation"), ("metadata", "inputnode.evaluation_meta")]),
    ])  # fmt: skip


def _connect_probseg(workflow, anat, preproc_wf, segment, ds_wf) -> None:
    """The network's probability, back on the source grid (``--save-probseg``)."""
    to_native_prob = pe.Node(ToNative(reference_file=str(anat.path)), name="to_native_prob")
    workflow.connect([
        (segment, to_native_prob, [("prob_stack", "in_stack")]),
        (preproc_wf, to_native_prob, [("outputnode.geometry_json", "geometry_json")]),
        (to_native_prob, ds_wf, [("out_file", "inputnode.probseg")]),
    ])  # fmt: skip
