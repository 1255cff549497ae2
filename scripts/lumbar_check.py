#!/usr/bin/env python3
"""Where does the mask end on a lumbar image without a manual mask? Extent, pieces, CSA profile, figure.

Each model segments each image as the participant level does (:func:`lumbo_bids.api.segment_image`:
the localiser's centerline, the model's plan and post-processing, the mask on the native grid).
On the image's RPI grid the script reports the mask's lowest and highest point (mm above the
bottom of the field of view), its connected pieces (26-connectivity), the cross-sectional area
of every slice (tilt not corrected) and whether its last 5 mm taper (below half its median CSA),
and draws one figure per image: the sagittal slice through the mask (or the middle), the mask's
contour in red, and the CSA profile along z for every model.

Usage::

    .venv/bin/python scripts/lumbar_check.py --models lumbo_bids/data/models/cord_seg work/new/cord_seg \\
        --images examples/ds-spine-mini/sub-sctLumbar/anat/sub-sctLumbar_T2w.nii.gz \\
                 work/ds-sag3/sub-sctLumbar/anat/sub-sctLumbar_T2w.nii.gz --names as_acquired sagittal3mm \\
        --out docs/figures/lumbar
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOGGER = logging.getLogger("lumbo_bids.lumbar_check")


def profile(mask: np.ndarray, affine: np.ndarray) -> dict:
    """Extent, pieces, CSA per slice and taper of a mask on an RPI grid (axis 2 inferior -> superior)."""
    from scipy import ndimage

    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    csa = (mask > 0).sum(axis=(0, 1)) * zooms[0] * zooms[1]
    z = np.flatnonzero(csa > 0)
    if z.size == 0:
        return {"empty": True, "csa_mm2": csa.tolist(), "z_mm": (np.arange(csa.size) * zooms[2]).tolist()}
    _, pieces = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    last = max(1, round(5.0 / zooms[2]))
    median = float(np.median(csa[z]))
    return {
        "empty": False,
        "bottom_mm": float(z[0] * zooms[2]),
        "top_mm": float(z[-1] * zooms[2]),
        "field_of_view_mm": float(csa.size * zooms[2]),
        "pieces": int(pieces),
        "csa_median_mm2": median,
        "tapers": bool(np.mean(csa[z[0] : z[0] + last]) < 0.5 * median),
        "csa_mm2": [round(float(v), 2) for v in csa],
        "z_mm": [round(float(k * zooms[2]), 2) for k in range(csa.size)],
    }


def figure(path: Path, image: np.ndarray, masks: dict, affine: np.ndarray, profiles: dict, title: str) -> None:
    """Sagittal slice with each model's contour, and the CSA profiles along z."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    n = len(masks)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * n + 4.5, 7), gridspec_kw={"width_ratios": [1] * n + [1.4]})
    lo, hi = np.percentile(image, [1, 99.5])
    for ax, (label, mask) in zip(axes[:n], masks.items()):
        inside = np.flatnonzero(mask.any(axis=(1, 2)))
        x = int(np.median(np.nonzero(mask)[0])) if inside.size else image.shape[0] // 2
        extent = (0, image.shape[1] * zooms[1], 0, image.shape[2] * zooms[2])
        ax.imshow(image[x].T, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=extent, aspect="equal")
        if mask[x].any():
            ax.contour(mask[x].T.astype(float), [0.5], colors="red", linewidths=0.8, extent=extent)
        ax.set_title(f"{label}\n(sagittal slice {x})", fontsize=9)
        ax.set_xlabel("posterior -> anterior (mm)")
    axes[0].set_ylabel("inferior -> superior (mm)")
    for label, prof in profiles.items():
        axes[n].plot(prof["csa_mm2"], prof["z_mm"], label=label)
    axes[n].set_xlabel("cord CSA (mm$^2$)")
    axes[n].set_ylabel("z (mm above the bottom of the field of view)")
    axes[n].legend(fontsize=8)
    axes[n].grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="segmentation artifacts")
    parser.add_argument("--labels", nargs="*", default=None, help="a short name per model (default: the paths)")
    parser.add_argument("--images", nargs="+", type=Path, required=True)
    parser.add_argument("--names", nargs="*", default=None, help="a short name per image (default: the file names)")
    parser.add_argument("--out", type=Path, required=True, help="folder: lumbar_check.json and one PNG per image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    labels = args.labels or [str(m) for m in args.models]
    names = args.names or [p.name.split(".nii")[0] for p in args.images]
    if len(labels) != len(args.models) or len(names) != len(args.images):
        parser.error("--labels and --names need one entry per model / image")

    from lumbo_bids.api import segment_image
    from lumbo_bids.geometry import RPI, reorient
    from lumbo_bids.utils.images import read_volume

    results = {}
    for name, path in zip(names, args.images):
        data, affine, img = read_volume(path)
        image, rpi_affine = reorient(data, affine, RPI)
        masks, profiles = {}, {}
        for label, model in zip(labels, args.models):
            seg = segment_image(img, model=model)
            mask, _ = reorient(np.asarray(seg.mask.dataobj), affine, RPI)
            masks[label], profiles[label] = mask, profile(mask, rpi_affine)
            p = profiles[label]
            LOGGER.info(
                "%s, %s: %s", name, label,
                "empty" if p["empty"] else f"{p['pieces']} piece(s), {p['bottom_mm']:.1f}-{p['top_mm']:.1f} mm of "
                f"{p['field_of_view_mm']:.0f} mm, tapers: {p['tapers']}",
            )  # fmt: skip
        results[name] = profiles
        figure(args.out / f"{name}.png", np.asarray(image, dtype=np.float32), masks, rpi_affine, profiles, f"{name}: {path}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lumbar_check.json").write_text(json.dumps(results, indent=1))
    LOGGER.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
