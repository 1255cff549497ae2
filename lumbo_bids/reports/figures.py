"""QC figures: the image with the cord mask's contour, the centerline and the crop box.

Pure functions over arrays and affines that return PNG bytes (matplotlib, Agg backend):
the report embeds them, so it needs no other file and no network.
"""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Data and affine in RAS+ voxel order (exact permutation/flip), for display."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asanyarray(img.dataobj), img.affine


def _window(image: np.ndarray) -> tuple[float, float]:
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _contour(ax, section: np.ndarray, **kwargs) -> None:
    """The 0.5 contour of a 2-D boolean ``section`` (``[x, y]``, drawn with x across), for any
    shape: padded by one empty pixel on every side, so a mask one pixel thick still has an
    outline and an image one slice thin still draws."""
    if not section.any():
        return
    padded = np.pad(section.astype(float), 1)
    xs, ys = np.arange(-1, section.shape[0] + 1), np.arange(-1, section.shape[1] + 1)
    limits = ax.get_xlim(), ax.get_ylim()  # the padding must not widen the view
    ax.contour(xs, ys, padded.T, levels=[0.5], **kwargs)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])


def figure_png(fig, **savefig_kwargs) -> bytes:
    """PNG bytes of a matplotlib figure (90 dpi), which is then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, **savefig_kwargs)
    plt.close(fig)
    return buf.getvalue()


def _png(fig) -> bytes:
    return figure_png(fig, bbox_inches="tight", facecolor="black")


def sagittal_figure(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    centerline_world: np.ndarray | None = None,
    crop_corners_world: np.ndarray | None = None,
    title: str = "",
) -> bytes:
    """Mid-sagittal slice through the cord: image, mask contour (red), centerline (yellow),
    crop box (cyan, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, ras = _canonical(np.asarray(image, dtype=np.float32), affine)
    seg, _ = _canonical((np.asarray(mask) > 0).astype(np.uint8), affine)
    seg = seg > 0
    zooms = np.linalg.norm(ras[:3, :3], axis=0)
    x = int(np.round(np.median(np.nonzero(seg)[0]))) if seg.any() else img.shape[0] // 2
    fig, ax = plt.subplots(figsize=(4.5, 6.5))
    lo, hi = _window(img)
    ax.imshow(img[x].T, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect=zooms[2] / zooms[1])
    _contour(ax, seg[x], colors="red", linewidths=1.0)
    inv = np.linalg.inv(ras)
    if centerline_world is not None and len(centerline_world):
        vox = nib.affines.apply_affine(inv, np.asarray(centerline_world, dtype=float))
        ax.plot(vox[:, 1], vox[:, 2], color="yellow", linewidth=0.8)
    if crop_corners_world is not None:
        vox = nib.affines.apply_affine(inv, np.asarray(crop_corners_world, dtype=float))
        y0, y1, z0, z1 = vox[:, 1].min(), vox[:, 1].max(), vox[:, 2].min(), vox[:, 2].max()
        ax.plot([y0, y1, y1, y0, y0], [z0, z0, z1, z1, z0], color="cyan", linestyle="--", linewidth=0.8)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(-0.5, img.shape[2] - 0.5)
    ax.set_title(title or f"sagittal slice {x}", color="white", fontsize=9)
    ax.axis("off")
    return _png(fig)


def axial_mosaic(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, n: int = 8, fov_mm: float = 40.0) -> bytes:
    """Up to ``n`` axial slices evenly spread over the cord (each once), each a ``fov_mm`` window
    around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, ras = _canonical(np.asarray(image, dtype=np.float32), affine)
    seg, _ = _canonical((np.asarray(mask) > 0).astype(np.uint8), affine)
    seg = seg > 0
    zooms = np.linalg.norm(ras[:3, :3], axis=0)
    z_cord = np.flatnonzero(seg.any(axis=(0, 1)))
    first, last = (z_cord[0], z_cord[-1]) if z_cord.size else (0, img.shape[2] - 1)
    zs = np.unique(np.linspace(first, last, n).round().astype(int))  # fewer panels when fewer slices
    half = np.maximum((fov_mm / 2 / zooms[:2]).astype(int), 4)
    fig, axes = plt.subplots(1, zs.size, figsize=(1.6 * zs.size, 1.9), squeeze=False)
    lo, hi = _window(img)
    for ax, z in zip(axes[0], zs):
        if seg[:, :, z].any():
            cx, cy = (int(v) for v in np.round(np.mean(np.nonzero(seg[:, :, z]), axis=1)))
        else:
            cx, cy = img.shape[0] // 2, img.shape[1] // 2
        xs = slice(max(cx - half[0], 0), cx + half[0])
        ys = slice(max(cy - half[1], 0), cy + half[1])
        ax.imshow(img[xs, ys, z].T, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect=zooms[1] / zooms[0])
        _contour(ax, seg[xs, ys, z], colors="red", linewidths=0.8)
        ax.set_title(f"z={z}", color="white", fontsize=7)
        ax.axis("off")
    return _png(fig)
