"""Preprocessing of one anatomical image: reorient, resample, centerline, crop (shared by both levels).

Node names are stable: the participant and group levels build this same workflow, so the work
dir caches it once for both.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.io import ValidateAnat
from ..interfaces.preproc import Centerline, CropAroundCenterline, Reorient, Resample
from ..interfaces.segment import LocaliseCord
from ..options import MODEL_NODE_MEM_GB

OUTPUT_FIELDS = [
    "rpi_file", "resampled_file", "mask_resampled", "centerline_json", "centerline_file",
    "centerline_csv", "out_stack", "mask_stack", "out_file", "mask_file", "geometry_json",
    "mask_native", "input_warnings", "heatmap_file",
]  # fmt: skip


def init_anat_preproc_wf(
    anat,
    resolution: float = 0.5,
    crop_size: tuple[int, int] = (64, 64),
    use_mask: bool = True,
    localiser: tuple[str, str] | None = None,
    omp_nthreads: int = 1,
    name: str = "preproc_wf",
):
    """Reorient to RPI, resample, find the centerline and crop around it.

    Parameters
    ----------
    anat : lumbo_bids.utils.bids.AnatInput
        The image and its manual mask (or None).
    use_mask : bool
        Take the centerline from the manual mask; otherwise from the ``localiser``
        (a ``(model path, checksum)`` pair).

    Outputs (``outputnode``): see ``OUTPUT_FIELDS``; ``mask_native`` is the manual mask's cord
    on the source grid as the checks read it, ``input_warnings`` the sidecar entries saying what
    they found doubtful.
    """
    workflow = pe.Workflow(name=name)
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    validate, reorient, resample, centerline, crop = _image_nodes(anat, resolution, crop_size)
    workflow.connect([
        (validate, reorient, [("in_file", "in_file")]),
        (validate, outputnode, [("input_warnings", "input_warnings")]),
        (reorient, resample, [("out_file", "in_file")]),
        (reorient, crop, [("out_file", "rpi_file")]),
        (resample, crop, [("out_file", "in_file")]),
        (centerline, crop, [("centerline_json", "centerline_json")]),
        (reorient, outputnode, [("out_file", "rpi_file")]),
        (resample, outputnode, [("out_file", "resampled_file")]),
        (centerline, outputnode, [
            ("centerline_json", "centerline_json"),
            ("centerline_file", "centerline_file"),
            ("centerline_csv", "centerline_csv"),
        ]),
        (crop, outputnode, [
            ("out_stack", "out_stack"),
            ("mask_stack", "mask_stack"),
            ("out_file", "out_file"),
            ("mask_file", "mask_file"),
            ("geometry_json", "geometry_json"),
        ]),
    ])  # fmt: skip
    if anat.mask is not None:
        resample_mask = _connect_manual_mask(workflow, validate, crop, outputnode, resolution)
    if use_mask:
        if anat.mask is None:
            raise ValueError(f"{anat.path}: no manual mask to take the centerline from")
        workflow.connect(resample_mask, "out_file", centerline, "mask_file")
    else:
        if localiser is None:
            raise ValueError(f"{anat.path}: no manual mask and no cord localiser")
        _connect_localiser(workflow, resample, centerline, outputnode, localiser, omp_nthreads)
    return workflow


def _image_nodes(anat, resolution: float, crop_size: tuple[int, int]):
    """Validate -> reorient -> resample, the centerline and the crop around it."""
    validate = pe.Node(ValidateAnat(in_file=str(anat.path)), name="validate")
    if anat.mask is not None:
        validate.inputs.mask_file = str(anat.mask)
    reorient = pe.Node(Reorient(), name="reorient")
    resample = pe.Node(Resample(resolution=resolution), name="resample")
    centerline = pe.Node(Centerline(), name="centerline")
    crop = pe.Node(CropAroundCenterline(native_file=str(anat.path), crop_size=tuple(crop_size)), name="crop")
    return validate, reorient, resample, centerline, crop


def _connect_manual_mask(workflow, validate, crop, outputnode, resolution: float):
    """The manual mask through the image's reorientation and resampling, into the crop."""
    reorient_mask = pe.Node(Reorient(is_mask=True), name="reorient_mask")
    resample_mask = pe.Node(Resample(resolution=resolution, is_mask=True), name="resample_mask")
    workflow.connect([
        (validate, reorient_mask, [("mask_file", "in_file")]),
        (validate, outputnode, [("mask_file", "mask_native")]),
        (reorient_mask, resample_mask, [("out_file", "in_file")]),
        (resample_mask, crop, [("out_file", "mask_file")]),
        (resample_mask, outputnode, [("out_file", "mask_resampled")]),
    ])  # fmt: skip
    return resample_mask


def _connect_localiser(workflow, resample, centerline, outputnode, localiser, omp_nthreads: int) -> None:
    """The localiser's heat-map (on the resampled image) as the centerline's source."""
    localise = pe.Node(
        LocaliseCord(model=str(localiser[0]), model_checksum=localiser[1], omp_nthreads=omp_nthreads),
        name="localise",
        mem_gb=MODEL_NODE_MEM_GB,
        n_procs=omp_nthreads,
    )
    workflow.connect([
        (resample, localise, [("out_file", "in_file")]),
        (localise, centerline, [("heatmap_file", "heatmap_file")]),
        (localise, outputnode, [("heatmap_file", "heatmap_file")]),
    ])  # fmt: skip
