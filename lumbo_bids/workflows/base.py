"""Top-level participant workflow: one sub-workflow per subject (a Python loop, stable names)."""

from __future__ import annotations

import re

from nipype.pipeline import engine as pe

from ..config import version_tag


def _node_name(text: str) -> str:
    """A stable, valid Nipype node name derived from a BIDS name."""
    return re.sub(r"\W", "_", text)


def init_lumbo_wf(config, inputs: dict):
    """Build ``lumbo_bids_<major>_<minor>_wf`` in the work dir with one workflow per subject.

    Parameters
    ----------
    config : lumbo_bids.config.Config
    inputs : dict[str, list[lumbo_bids.utils.bids.AnatInput]]
        Anatomical images to segment, per subject label.
    """
    workflow = pe.Workflow(name=f"lumbo_bids_{version_tag()}_wf")
    workflow.base_dir = str(config.work_dir)
    for subject, anats in inputs.items():
        single_subject_wf = init_single_subject_wf(config, subject, anats)
        single_subject_wf.config["execution"]["crashdump_dir"] = str(
            config.output_dir / f"sub-{subject}" / "log" / config.run_uuid
        )
        for node in single_subject_wf._get_all_nodes():
            node.config = node.config or {}
            node.config.setdefault("execution", {})["crashdump_dir"] = str(
                config.output_dir / f"sub-{subject}" / "log" / config.run_uuid
            )
        workflow.add_nodes([single_subject_wf])
    return workflow


def init_single_subject_wf(config, subject: str, anats: list):
    """Segment every selected anatomical image of one subject."""
    from ..model.selection import choose_models
    from .anat import init_anat_seg_wf

    workflow = pe.Workflow(name=subject_wf_name(subject))
    for anat in anats:
        needs_localiser = anat.mask is None or config.ignore_manual_centerline
        models = choose_models(config, anat.contrast, needs_localiser)
        workflow.add_nodes([init_anat_seg_wf(config, anat, models, name=anat_wf_name(anat))])
    return workflow


def anat_wf_name(anat) -> str:
    """Stable name of an image's workflow (shared by both levels so the cache is shared)."""
    return f"{_node_name(anat.stem)}_wf"


def subject_wf_name(subject: str) -> str:
    return f"sub_{_node_name(subject)}_wf"
