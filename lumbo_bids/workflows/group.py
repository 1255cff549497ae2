"""Group level: preprocess every image that has a manual mask (the participant-level cache is reused)."""

from __future__ import annotations

from nipype.pipeline import engine as pe

from ..config import version_tag
from .base import anat_wf_name, subject_wf_name
from .preproc import init_anat_preproc_wf


def init_group_preproc_wf(config, anats: list, resolution: float, crop_size: tuple[int, int]):
    """The participant level's own preprocessing, for each image with a mask, same node names.

    Because the node paths (``lumbo_bids_X_Y_wf/sub_*_wf/<image>_wf/preproc_wf/...``) and inputs
    equal the participant level's, a shared ``--work-dir`` computes each step once.
    """
    workflow = pe.Workflow(name=f"lumbo_bids_{version_tag()}_wf")
    workflow.base_dir = str(config.work_dir)
    subjects: dict[str, pe.Workflow] = {}
    for anat in anats:
        subject_wf = subjects.setdefault(anat.subject, pe.Workflow(name=subject_wf_name(anat.subject)))
        anat_wf = pe.Workflow(name=anat_wf_name(anat))
        anat_wf.add_nodes([
            init_anat_preproc_wf(
                anat, resolution=resolution, crop_size=crop_size, use_mask=True, omp_nthreads=config.omp_nthreads
            )
        ])  # fmt: skip
        subject_wf.add_nodes([anat_wf])
        crash_dir = str(config.output_dir / "group" / "log" / config.run_uuid)
        subject_wf.config["execution"]["crashdump_dir"] = crash_dir
    workflow.add_nodes(list(subjects.values()))
    return workflow


def preproc_outputs(exec_graph, anats: list) -> dict:
    """Map each image to its ``crop`` node's outputs from a finished execution graph."""
    by_path = {}
    for node in exec_graph.nodes():
        if node.name != "crop" or node.result is None:
            continue
        path = node.fullname.split(".")  # workflow/subject/image/preproc_wf/crop
        for anat in anats:
            if [subject_wf_name(anat.subject), anat_wf_name(anat)] == path[-4:-2]:
                by_path[anat.path] = node.result.outputs
    return by_path
