"""Which unlabelled images to annotate next.

A manual mask helps fine-tuning most where the current model is unsure of its mask and where the
image is unlike every image that already has one. Each unlabelled image gets

- an **uncertainty** in [0, 1] from the participant level's QC of its automatic mask (raised
  flags, the network's margin under the mask), 1 when it has not been segmented yet, and
- a **novelty** in [0, 1]: its distance, in a standardised space of acquisition and anatomy
  features (voxel size, field of view, contrast, cord length and CSA), to the nearest image that
  is annotated or already ranked above it (greedy core-set selection: a batch of look-alikes is
  not all picked before a different kind of image).

``score = (uncertainty + novelty) / 2``, plus 1 for an image rated ``fail`` on the QC page: a
mask a person rejected is the first to draw. Pure numpy: :mod:`lumbo_bids.reports.annotate` reads
the features from the derivatives and writes ``group/annotate_next.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: contrasts with a feature column of their own (anything else shares the "other" column)
CONTRASTS = ("T1w", "T2w", "T2starw")


@dataclass(frozen=True)
class Candidate:
    """One image of the study, annotated or not, described for the ranking."""

    image: str  # source file name without .nii.gz
    subject: str
    labelled: bool
    features: dict[str, float] = field(default_factory=dict)  # missing features: the study's mean
    uncertainty: float = 1.0  # in [0, 1]
    rated_fail: bool = False
    why_uncertain: str = ""  # e.g. "flags: mask_breaks"


@dataclass(frozen=True)
class Ranked:
    rank: int
    candidate: Candidate
    score: float
    novelty: float
    nearest: str | None  # the most similar annotated or higher-ranked image
    reason: str


def acquisition_features(zooms_rpi, shape_rpi, contrast: str) -> dict[str, float]:
    """Features of how an image was acquired: in-plane and through-plane voxel size (log mm), the
    superior-inferior field of view (log mm) and the contrast (one-hot)."""
    zooms = np.asarray(zooms_rpi, dtype=float)
    features = {
        "log_inplane_mm": float(np.log(np.mean(zooms[:2]))),
        "log_slice_mm": float(np.log(zooms[2])),
        "log_fov_si_mm": float(np.log(zooms[2] * shape_rpi[2])),
    }
    for name in (*CONTRASTS, "other"):
        features[f"contrast_{name}"] = float(contrast == name or (name == "other" and contrast not in CONTRASTS))
    return features


def anatomy_features(morphometrics: dict | None) -> dict[str, float]:
    """Features of the cord the automatic mask found (absent when there is no participant output)."""
    if not morphometrics:
        return {}
    out = {}
    for key, name in (("CordLength_mm", "log_cord_length_mm"), ("MeanCSA_mm2", "log_mean_csa_mm2")):
        value = morphometrics.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value) and value > 0:
            out[name] = float(np.log(value))
    out["has_conus"] = float(morphometrics.get("ConusTip_mm") is not None)
    return out


def feature_matrix(candidates: list[Candidate]) -> np.ndarray:
    """Candidates × features, each column z-scored over the study (missing → 0, the mean);
    a constant column carries no information and becomes 0."""
    names = sorted({name for c in candidates for name in c.features})  # each present in one candidate at least
    raw = np.array([[c.features.get(name, np.nan) for name in names] for c in candidates], dtype=float)
    raw = raw.reshape(len(candidates), len(names))
    mean, std = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
    std = np.where(std > 1e-9, std, np.inf)
    return (np.where(np.isnan(raw), mean, raw) - mean) / std


def rank_for_annotation(candidates: list[Candidate]) -> list[Ranked]:
    """Rank the unlabelled candidates, best first (greedy: each pick becomes a reference for the
    novelty of the next)."""
    if not candidates:
        return []
    x = feature_matrix(candidates)
    chosen = [i for i, c in enumerate(candidates) if c.labelled]
    left = [i for i, c in enumerate(candidates) if not c.labelled]
    scale = max(_max_pairwise(x), 1e-9)  # novelty 1 = as far as the two most different images
    ranked: list[Ranked] = []
    while left:
        novelty, nearest = _novelty(x, left, chosen, scale)
        scores = [0.5 * (candidates[i].uncertainty + novelty[k]) + float(candidates[i].rated_fail) for k, i in enumerate(left)]
        k = int(np.argmax(scores))
        i = left.pop(k)
        near = candidates[nearest[k]].image if nearest[k] is not None else None
        ranked.append(
            Ranked(
                len(ranked) + 1,
                candidates[i],
                float(scores[k]),
                float(novelty[k]),
                near,
                _reason(candidates[i], novelty[k], near),
            )
        )
        chosen.append(i)
    return ranked


def _max_pairwise(x: np.ndarray) -> float:
    if len(x) < 2:
        return 0.0
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def _novelty(x: np.ndarray, left: list[int], chosen: list[int], scale: float) -> tuple[np.ndarray, list]:
    """Distance of each image in ``left`` to the nearest in ``chosen`` (1 when none is chosen)."""
    if not chosen:
        return np.ones(len(left)), [None] * len(left)
    d = np.sqrt(((x[left][:, None, :] - x[chosen][None, :, :]) ** 2).sum(-1))
    nearest = [chosen[j] for j in d.argmin(axis=1)]
    return np.clip(d.min(axis=1) / scale, 0.0, 1.0), nearest


def _reason(c: Candidate, novelty: float, nearest: str | None) -> str:
    parts = []
    if c.rated_fail:
        parts.append("automatic mask rated fail")
    if c.why_uncertain:
        parts.append(c.why_uncertain)
    elif c.uncertainty < 0.25:
        parts.append("confident automatic mask")
    if nearest is None:
        parts.append("no annotated image yet")
    elif novelty >= 0.5:
        parts.append(f"unlike the annotated images (nearest {nearest}, distance {novelty:.2f})")
    else:
        parts.append(f"resembles {nearest} (distance {novelty:.2f})")
    return "; ".join(parts)
