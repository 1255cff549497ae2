"""The model artifact's format: its file names and the checks of its manifest, ``model.json``.

``model.json`` holds the architecture, task, contrasts, preprocessing plan, inference settings,
training card and the sha256 of every file (see :mod:`lumbo_bids.model.artifact`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .architectures import ARCHITECTURES
from .inference import BLENDS

FORMAT = "lumbo_bids-model"
FORMAT_VERSION = 1
MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "weights.weights.h5"
TASKS = ("segmentation", "localisation")
INTENSITY_METHODS = ("robust", "nyul", "percentile")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _preprocessing_problem(pre: Any) -> str | None:
    if not isinstance(pre, dict):
        return "'preprocessing' must be an object"
    orient, res = pre.get("orientation"), pre.get("resolution_mm")
    if not (isinstance(orient, str) and len(orient) == 3 and set(orient) <= set("RLAPSI")):
        return f"preprocessing.orientation must be a code like 'RPI', got {orient!r}"
    if not (_is_number(res) and res > 0):
        return f"preprocessing.resolution_mm must be a positive number, got {res!r}"
    for key, lengths in (("crop_size", (2,)), ("patch_size", (2, 3))):
        size = pre.get(key, [1] * lengths[0])
        ints = isinstance(size, list) and all(type(v) is int and v > 0 for v in size)
        if not (ints and len(size) in lengths):
            return f"preprocessing.{key} must list {lengths} positive ints, got {size!r}"
    inten = pre.get("intensity")
    if not isinstance(inten, dict) or inten.get("method") not in INTENSITY_METHODS:
        return f"preprocessing.intensity.method must be one of {INTENSITY_METHODS}"
    perc, std = inten.get("percentiles", []), inten.get("standard")
    if not (isinstance(perc, list) and all(_is_number(p) and 0 <= p <= 100 for p in perc)):
        return "preprocessing.intensity.percentiles must be numbers in [0, 100]"
    nyul_ok = isinstance(std, list) and len(std) == len(perc) >= 2 and all(map(_is_number, std))
    if inten["method"] == "nyul" and not nyul_ok:
        return "preprocessing.intensity.standard must match percentiles (>= 2 landmarks)"
    return None


def _inference_problem(inf: Any) -> str | None:
    if not isinstance(inf, dict):
        return "'inference' must be an object"
    thr, ovl, blend = inf.get("threshold"), inf.get("overlap"), inf.get("blend")
    if not (_is_number(thr) and 0 <= thr <= 1):
        return f"inference.threshold must be in [0, 1], got {thr!r}"
    if not (_is_number(ovl) and 0 <= ovl < 1):
        return f"inference.overlap must be in [0, 1), got {ovl!r}"
    if blend not in BLENDS:
        return f"inference.blend must be one of {BLENDS}, got {blend!r}"
    window = inf.get("window")
    if window is not None and not (
        isinstance(window, list) and len(window) == 3 and all(type(v) is int and v > 0 for v in window)
    ):
        return f"inference.window must be 3 positive integers, got {window!r}"
    return None


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a manifest, in a few words; ``None`` when it is valid."""
    if not isinstance(manifest, dict):
        return f"{MANIFEST_NAME} must hold a JSON object"
    if manifest.get("format") != FORMAT:
        return f"unknown format {manifest.get('format')!r} (expected {FORMAT!r})"
    version = manifest.get("format_version")
    if not (type(version) is int and version >= 1):
        return f"format_version must be a positive integer, got {version!r}"
    if version > FORMAT_VERSION:
        return f"format_version {version} is newer than supported ({FORMAT_VERSION}); upgrade"
    for key in ("name", "version", "created"):
        if not (isinstance(manifest.get(key), str) and manifest[key]):
            return f"'{key}' must be a non-empty string"
    arch = manifest.get("architecture")
    if not (isinstance(arch, dict) and isinstance(arch.get("config"), dict)):
        return "'architecture' must be an object with 'name' and 'config'"
    if arch.get("name") not in ARCHITECTURES:
        return f"unknown architecture {arch.get('name')!r} (known: {sorted(ARCHITECTURES)})"
    if manifest.get("task") not in TASKS:
        return f"task must be one of {TASKS}, got {manifest.get('task')!r}"
    contrasts = manifest.get("contrasts")
    if not (isinstance(contrasts, list) and contrasts and all(type(c) is str for c in contrasts)):
        return "'contrasts' must be a non-empty list of strings"
    problem = _preprocessing_problem(manifest.get("preprocessing"))
    if problem or (problem := _inference_problem(manifest.get("inference"))):
        return problem
    if not isinstance(manifest.get("training", {}), dict):
        return "'training' must be an object"
    files = manifest.get("files")
    if not (isinstance(files, dict) and WEIGHTS_NAME in files):
        return f"'files' must list {WEIGHTS_NAME!r} with its sha256"
    for name, digest in files.items():
        plain = Path(name).name == name and name not in (MANIFEST_NAME, ".", "..")
        if not (plain and isinstance(digest, str) and len(digest) == 64):
            return f"'files' entry {name!r} must be a plain file name with a sha256 hex digest"
    return None
