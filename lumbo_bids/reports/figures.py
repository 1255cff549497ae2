"""QC figures: the image with the cord mask's contour, the centerline and the crop box.

Pure functions over arrays and affines that return PNG bytes (matplotlib, Agg backend). Each
view is drawn at a pixel size with the volume's physical aspect (voxel sizes), large enough to
read: the short side is at least :data:`MIN_SHORT_PX` pixels, so a 15 mm-long volume is not a thin
strip. Every view comes with and without its overlay (``overlay=False``), for the study page's
overlay toggle. The one home of the figures' file names is :func:`figure_path`; the subject
report writes them, the study page links to them.
"""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np

#: a view's short side in pixels, at least (small volumes are upscaled)
MIN_SHORT_PX = 300
#: a view's long side when the volume's own resolution gives fewer pixels
TARGET_LONG_PX = 800
#: a view's long side at most, unless the short side needs more (a long thin strip)
MAX_LONG_PX = 1600
#: an axial panel's side in pixels
PANEL_PX = 256
#: the sagittal view is cropped in the anterior-posterior direction to at most this many times
#: its height (and never to less than ``_MIN_SAGITTAL_WIDTH_MM``): a short volume stays readable
_MAX_SAGITTAL_ASPECT = 4.0
_MIN_SAGITTAL_WIDTH_MM = 80.0
_DPI = 100
VIEWS = ("sagittal", "axial")


def figure_path(output_dir: Path, subject: str, stem: str, view: str, overlay: bool = True) -> Path:
    """``OUTPUT_DIR/sub-<subject>/figures/<stem>_<view>[_plain].png``: a view of the image whose
    mask is ``<stem>_mask.nii.gz``, with its overlay or without (``_plain``)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    return Path(output_dir) / f"sub-{subject}" / "figures" / f"{stem}_{view}{'' if overlay else '_plain'}.png"


def display_size(width_mm: float, height_mm: float, px_per_mm: float = 1.0) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of a ``width_mm`` × ``height_mm`` view: its physical aspect,
    ``px_per_mm`` (the image's own resolution) or enough for a :data:`TARGET_LONG_PX` long side,
    at most :data:`MAX_LONG_PX`, and a short side of at least :data:`MIN_SHORT_PX` whatever the
    aspect (that rule wins)."""
    short, long = sorted((max(width_mm, 1e-6), max(height_mm, 1e-6)))
    scale = min(max(px_per_mm, TARGET_LONG_PX / long), MAX_LONG_PX / long)
    scale = max(scale, MIN_SHORT_PX / short)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


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
    """PNG bytes of a matplotlib figure (90 dpi unless told), which is then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **{"dpi": 90, **savefig_kwargs})
    plt.close(fig)
    return buf.getvalue()


def _canvas(width_px: int, height_px: int):
    """A black figure of exactly ``width_px`` × ``height_px`` pixels (saved at :data:`_DPI`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="black")


def _panel(fig, box: tuple[float, float, float, float], section: np.ndarray, window, limits) -> object:
    """Axes filling ``box`` (figure fraction) with ``section`` (``[x, y]``, x across) in grey,
    one voxel per data unit, showing ``limits`` ((x0, x1), (y0, y1)) and nothing outside."""
    ax = fig.add_axes(box)
    ax.set_facecolor("black")
    ax.imshow(section.T, origin="lower", cmap="gray", vmin=window[0], vmax=window[1], aspect="auto", interpolation="nearest")
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.axis("off")
    return ax


def _label(ax, text: str, letters: tuple[str, str, str, str]) -> None:
    """``text`` at the top left; the orientation letters: (left, right) at mid-height of those
    edges, (bottom, top) in the right-hand corners, clear of the text on a narrow view."""
    style = {"color": "white", "fontsize": 9, "transform": ax.transAxes, "bbox": {"facecolor": "black", "alpha": 0.5, "pad": 1}}
    ax.text(0.01, 0.99, text, ha="left", va="top", **style)
    places = (
        (0.01, 0.5, "left", "center"),
        (0.99, 0.5, "right", "center"),
        (0.99, 0.01, "right", "bottom"),
        (0.99, 0.99, "right", "top"),
    )
    for (x, y, ha, va), letter in zip(places, letters):
        ax.text(x, y, letter, ha=ha, va=va, **style)


def _sagittal_window(seg: np.ndarray, zooms: np.ndarray) -> tuple[float, float]:
    """The anterior-posterior range (voxel edges) the sagittal view shows: all of it, or a window
    around the cord when the volume is much wider than it is long."""
    ny, nz = seg.shape[1], seg.shape[2]
    width = max(_MAX_SAGITTAL_ASPECT * nz * zooms[2], _MIN_SAGITTAL_WIDTH_MM) / zooms[1]
    if width >= ny:
        return -0.5, ny - 0.5
    centre = float(np.median(np.nonzero(seg)[1])) if seg.any() else (ny - 1) / 2
    start = min(max(centre - width / 2, -0.5), ny - 0.5 - width)
    return start, start + width


def sagittal_figure(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    centerline_world: np.ndarray | None = None,
    crop_corners_world: np.ndarray | None = None,
    title: str = "",
    overlay: bool = True,
) -> bytes:
    """Mid-sagittal slice through the cord, anterior to the right, at its physical aspect:
    image, mask contour (red), centerline (yellow), crop box (cyan, dashed); ``overlay=False``
    draws the image alone (same size)."""
    img, ras = _canonical(np.asarray(image, dtype=np.float32), affine)
    seg, _ = _canonical((np.asarray(mask) > 0).astype(np.uint8), affine)
    seg = seg > 0
    zooms = np.linalg.norm(ras[:3, :3], axis=0)
    x = int(np.round(np.median(np.nonzero(seg)[0]))) if seg.any() else img.shape[0] // 2
    ys = _sagittal_window(seg, zooms)
    zs = (-0.5, img.shape[2] - 0.5)
    size = display_size((ys[1] - ys[0]) * zooms[1], img.shape[2] * zooms[2], 1 / min(zooms[1], zooms[2]))
    fig = _canvas(*size)
    ax = _panel(fig, (0, 0, 1, 1), img[x], _window(img), (ys, zs))
    if overlay:
        _contour(ax, seg[x], colors="red", linewidths=1.2)
        inv = np.linalg.inv(ras)
        if centerline_world is not None and len(centerline_world):
            vox = nib.affines.apply_affine(inv, np.asarray(centerline_world, dtype=float))
            ax.plot(vox[:, 1], vox[:, 2], color="yellow", linewidth=1.0)
        if crop_corners_world is not None:
            vox = nib.affines.apply_affine(inv, np.asarray(crop_corners_world, dtype=float))
            y0, y1, z0, z1 = vox[:, 1].min(), vox[:, 1].max(), vox[:, 2].min(), vox[:, 2].max()
            ax.plot([y0, y1, y1, y0, y0], [z0, z0, z1, z1, z0], color="cyan", linestyle="--", linewidth=1.0)
        ax.set_xlim(*ys)
        ax.set_ylim(*zs)
    _label(ax, f"{title + ' · ' if title else ''}sagittal x={x}", ("P", "A", "I", "S"))
    return figure_png(fig, dpi=_DPI)


def axial_slices(mask: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` axial slice indices (of the RAS+ canonical grid) evenly spread over the cord,
    each once (fewer when the cord spans fewer slices); over the whole image without a cord."""
    z_cord = np.flatnonzero(mask.any(axis=(0, 1)))
    first, last = (z_cord[0], z_cord[-1]) if z_cord.size else (0, mask.shape[2] - 1)
    return np.unique(np.linspace(first, last, n).round().astype(int))


def axial_mosaic(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    n: int = 6,
    fov_mm: float = 40.0,
    overlay: bool = True,
    columns: int = 3,
) -> bytes:
    """Up to ``n`` axial slices evenly spread over the cord (each once), inferior first, in rows
    of ``columns`` square panels of :data:`PANEL_PX` pixels, each a ``fov_mm`` window around
    the cord (right of the subject to the right); mask contour in red unless ``overlay=False``."""
    img, ras = _canonical(np.asarray(image, dtype=np.float32), affine)
    seg, _ = _canonical((np.asarray(mask) > 0).astype(np.uint8), affine)
    seg = seg > 0
    zooms = np.linalg.norm(ras[:3, :3], axis=0)
    zs = axial_slices(seg, n)
    cols = min(columns, zs.size)
    rows = -(-zs.size // cols)
    gap = 4
    width, height = cols * PANEL_PX + (cols - 1) * gap, rows * PANEL_PX + (rows - 1) * gap
    fig = _canvas(width, height)
    window = _window(img)
    half = fov_mm / 2 / zooms[:2]
    for i, z in enumerate(zs):
        row, col = divmod(i, cols)
        box = (col * (PANEL_PX + gap) / width, 1 - (row + 1) * PANEL_PX / height - row * gap / height)
        if seg[:, :, z].any():
            cx, cy = np.mean(np.nonzero(seg[:, :, z]), axis=1)
        else:
            cx, cy = (img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2
        limits = ((cx - half[0], cx + half[0]), (cy - half[1], cy + half[1]))
        ax = _panel(fig, (*box, PANEL_PX / width, PANEL_PX / height), img[:, :, z], window, limits)
        if overlay:
            _contour(ax, seg[:, :, z], colors="red", linewidths=1.0)
        _label(ax, f"z={z}", ("L", "R", "P", "A"))
    return figure_png(fig, dpi=_DPI)
