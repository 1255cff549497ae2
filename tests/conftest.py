"""Shared fixtures: the real example dataset beside the repository (../shared) or bundled copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [
    Path(os.environ["LUMBO_TEST_DATA"]) if os.environ.get("LUMBO_TEST_DATA") else None,
    REPO.parent / "shared" / "data" / "ds-spine-mini",
    REPO / "examples" / "ds-spine-mini",
]


#: a 3D U-Net small enough to train in seconds (model, group and ensemble tests)
TINY_UNET = {"base_filters": 2, "depth": 2, "patch_size": [16, 16, 16]}


def tiny_manifest(config: dict = TINY_UNET, overlap: float = 0.5) -> dict:
    """The manifest of a tiny segmentation artifact (robust intensity, 0.5 mm, 32 x 32 crops, the
    network's patch)."""
    return {
        "name": "tiny-seg",
        "version": "0.0.1",
        "architecture": {"name": "unet3d", "config": config},
        "task": "segmentation",
        "contrasts": ["T2w"],
        "preprocessing": {
            "orientation": "RPI",
            "resolution_mm": 0.5,
            "crop_size": [32, 32],
            "patch_size": list(config["patch_size"]),
            "intensity": {"method": "robust", "clip": [0.5, 99.5]},
        },
        "inference": {"threshold": 0.5, "overlap": overlap, "blend": "gaussian"},
        "training": {"seed": 0},
    }


def _find_dataset() -> Path:
    for cand in _CANDIDATES:
        if cand is not None and (cand / "dataset_description.json").is_file():
            return cand
    raise RuntimeError("ds-spine-mini not found (set LUMBO_TEST_DATA)")


DS_SPINE_MINI = _find_dataset()
LABELS = DS_SPINE_MINI / "derivatives" / "labels"

# (image, manual mask) for every image of ds-spine-mini that has one
IMAGE_MASK_PAIRS = [
    (img, mask)
    for img in sorted(DS_SPINE_MINI.glob("sub-*/anat/*.nii.gz"))
    for mask in sorted((LABELS / img.parent.relative_to(DS_SPINE_MINI)).glob(img.name.replace(".nii.gz", "") + "_*.nii.gz"))
]
ALL_IMAGES = sorted(DS_SPINE_MINI.glob("sub-*/anat/*.nii.gz"))


@pytest.fixture(scope="session")
def ds_spine_mini() -> Path:
    return DS_SPINE_MINI


@pytest.fixture(scope="session")
def shared_models() -> Path:
    path = REPO.parent / "shared" / "models" / "sct-deepseg_sc"
    if not path.is_dir():
        pytest.skip("SCT centerline models (../shared/models) not available")
    return path


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="session", autouse=True)
def input_dataset_untouched():
    """Every test session must leave the input BIDS folder byte-identical."""
    before = _tree_digest(DS_SPINE_MINI)
    yield
    after = _tree_digest(DS_SPINE_MINI)
    assert after == before, f"the input dataset {DS_SPINE_MINI} was modified"
