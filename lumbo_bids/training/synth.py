"""Label-driven synthetic training images, in the spirit of SynthSeg (Billot et al., 2023).

A label map (cord and CSF masks drawn by hand, without their image) becomes a new image every
time it is drawn: each tissue class gets a random intensity and texture, and the domain
randomisation of :mod:`lumbo_bids.training.augment` then deforms, blurs, degrades the resolution,
adds bias and noise. A network trained on such images cannot rely on any one contrast: it must
use the shape of the cord inside the canal.

Classes of a label map (:func:`derive_labels`): 1 cord, 2 CSF, 3 a thin shell outside the canal
(dura, epidural fat), 4 a thicker shell beyond it (bone, ligaments), 5 everything further out,
6 nerve roots; classes 4 and 5 are split at random into smooth sub-regions when an image is
drawn, so that the background has structure rather than flat rings.

The label maps we have are cervical: none shows the conus medullaris or the cauda equina, the
very anatomy of the lumbar canal where a network must learn that the cord *ends* and that the
nerve roots below it (dark strands in bright CSF on T2w, often as dark as the cord) are not
cord. :func:`lumbar_phantom` draws such label maps procedurally: a canal and a cord that tapers
to a conus tip at a random level, with nerve roots around the conus and filling the canal
below it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CORD, CSF, SHELL, BONE, OUTER, ROOTS = 1, 2, 3, 4, 5, 6
N_CLASSES = 7  # 0 (outside the field of view) to ROOTS


def derive_labels(cord: np.ndarray, csf: np.ndarray, voxel_mm: float = 0.5) -> np.ndarray:
    """Label map (uint8, classes above) from a cord mask and a CSF mask on the same grid.

    Parameters
    ----------
    cord, csf : numpy.ndarray
        3D masks (non-zero is inside); where they overlap, cord wins.
    voxel_mm : float
        Isotropic voxel size, for the shell thicknesses (1.5 mm and 6 mm).

    Returns
    -------
    numpy.ndarray
        uint8 labels 1-5, same shape.
    """
    cord, csf = np.asarray(cord) > 0, np.asarray(csf) > 0
    if cord.shape != csf.shape or cord.ndim != 3:
        raise ValueError(f"cord {cord.shape} and CSF {csf.shape} must be 3D masks of one shape")
    if not cord.any():
        raise ValueError("the cord mask is empty")
    return _with_shells(cord | csf, voxel_mm, {CSF: csf, CORD: cord})


def _with_shells(canal: np.ndarray, voxel_mm: float, inside: dict[int, np.ndarray]) -> np.ndarray:
    """Shells around ``canal`` (1.5 mm: SHELL, 6 mm: BONE, OUTER beyond), then ``inside`` in order."""
    distance = ndimage.distance_transform_edt(~canal) * voxel_mm
    labels = np.full(canal.shape, OUTER, dtype=np.uint8)
    labels[distance <= 6.0] = BONE
    labels[distance <= 1.5] = SHELL
    for cls, where in inside.items():
        labels[where] = cls
    return labels


def _smooth_walk(n: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A slowly varying curve of ``n`` values within about ``+-amplitude``."""
    walk = ndimage.gaussian_filter1d(rng.normal(size=n), sigma=max(2.0, n / 6), mode="nearest")
    peak = np.abs(walk).max()
    return walk * (amplitude / peak) if peak > 0 else walk


def _canal_course(shape, rng: np.random.Generator, voxel_mm: float, dorsal_roots: float) -> tuple:
    """(nz, voxels per mm, x and y coordinate grids, the canal's centre along z) of a phantom."""
    if not 0.0 <= dorsal_roots <= 1.0:
        raise ValueError(f"dorsal_roots must be in [0, 1], got {dorsal_roots}")
    nx, ny, nz = shape
    mm = 1.0 / voxel_mm
    xs = np.arange(nx, dtype=np.float32)[:, None, None]
    ys = np.arange(ny, dtype=np.float32)[None, :, None]
    cx = (nx - 1) / 2 + _smooth_walk(nz, 3 * mm, rng)
    cy = (ny - 1) / 2 + _smooth_walk(nz, 3 * mm, rng)
    return nz, mm, xs, ys, cx, cy


def lumbar_phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, voxel_mm: float = 0.5, dorsal_roots: float = 0.0
) -> np.ndarray:
    """A random label map of the lumbar canal: conus medullaris, cauda equina, CSF, shells.

    The canal (an ellipse of 6-9 x 5-8 mm semi-axes) and the cord (3-5 x 2.5-4 mm) follow smooth
    random courses along z; the cord tapers over 8-25 mm to a conus tip at a random level
    (in a quarter of the phantoms above the field of view: roots only) and 10-30 nerve roots
    (0.4-1 mm radius) run in the CSF around the conus and below it: scattered over the canal,
    or (with probability ``dorsal_roots``) gathered in a bundle of 1-3 mm spread against
    the posterior wall, where they settle in a supine patient and where, on a T2w image, they
    look most like a continuation of the cord. With ``dorsal_roots`` 0 the random stream (and so
    the phantom of a seed) is the one of the recipe before dorsal bundles existed.

    Returns
    -------
    numpy.ndarray
        uint8 labels (classes of this module), ``shape``; the cord is ``labels == CORD``.
    """
    nz, mm, xs, ys, cx, cy = _canal_course(shape, rng, voxel_mm, dorsal_roots)
    canal_r = rng.uniform(6, 9) * mm, rng.uniform(5, 8) * mm
    canal = ((xs - cx) / canal_r[0]) ** 2 + ((ys - cy) / canal_r[1]) ** 2 <= 1.0
    tip = rng.uniform(0.15, 0.7) * nz if rng.random() < 0.75 else nz + 1.0
    taper = rng.uniform(8, 25) * mm
    z = np.arange(nz, dtype=np.float32)
    scale = np.sqrt(np.clip((z - tip) / taper, 0.0, 1.0))
    cord_r = rng.uniform(3, 5) * mm, rng.uniform(2.5, 4) * mm
    ccx = cx + _smooth_walk(nz, 1 * mm, rng)
    ccy = cy + rng.uniform(-1.5, 1.5) * mm + _smooth_walk(nz, 1 * mm, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ellipse = ((xs - ccx) / (cord_r[0] * scale)) ** 2 + ((ys - ccy) / (cord_r[1] * scale)) ** 2
    cord = (ellipse <= 1.0) & (scale > 0.05) & canal
    roots = np.zeros(shape, dtype=bool)
    top = min(nz, tip + taper + rng.uniform(5, 40) * mm)
    dorsal = dorsal_roots > 0 and rng.random() < dorsal_roots
    if dorsal:  # a bundle against the posterior wall (-y in RPI), as the roots settle in a supine patient
        where, depth, spread = rng.uniform(-0.5, 0.5) - np.pi / 2, rng.uniform(0.3, 0.7), rng.uniform(1.0, 3.0) * mm
        bx, by = depth * canal_r[0] * np.cos(where), depth * canal_r[1] * np.sin(where)  # the bundle's centre
    for _ in range(int(rng.integers(10, 31))):
        if dorsal:
            offset = rng.normal(0.0, spread, 2)
            rx = cx + bx + offset[0] + _smooth_walk(nz, 0.5 * mm, rng)
            ry = cy + by + offset[1] + _smooth_walk(nz, 0.5 * mm, rng)
        else:
            angle, radius = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0.05, 0.8))
            rx = cx + radius * canal_r[0] * np.cos(angle) + _smooth_walk(nz, 1.5 * mm, rng)
            ry = cy + radius * canal_r[1] * np.sin(angle) + _smooth_walk(nz, 1.5 * mm, rng)
        extent = z < top * rng.uniform(0.7, 1.0)
        roots |= (((xs - rx) ** 2 + (ys - ry) ** 2) <= (rng.uniform(0.4, 1.0) * mm) ** 2) & extent & canal
    return _with_shells(canal, voxel_mm, {CSF: canal, ROOTS: roots & ~cord, CORD: cord})


#: Morphometry of :func:`conus_phantom` (mm, mm^2), from published adult morphometry and the one
#: bundled manual mask that reaches the conus (``sub-PAM50small``, the PAM50 template: CSA about
#: 40-45 mm^2 in the lower thoracic cord, 53-55 mm^2 at the lumbar enlargement 45-65 mm above the
#: tip, rising about linearly over the 40 mm above the tip, a thin strand over the last 5 mm).
CONUS_MORPHOMETRY = {
    "enlargement_semi_axes_mm": ((3.8, 5.2), (2.8, 3.8)),  # left-right, anterior-posterior
    "thoracic_scale": (0.8, 0.95),  # the thoracic cord's semi-axes / the enlargement's
    "taper_mm": (10.0, 40.0),  # from the tip to the full enlargement
    "taper_power": (1.0, 2.0),  # CSA ~ (distance above the tip / taper) ** power: 1 PAM50, 2 a cone
    "enlargement_length_mm": (15.0, 40.0),  # full width above the taper before the thoracic cord
    "filum_radius_mm": (0.4, 0.9),
    "root_radius_mm": (0.4, 1.0),
    "canal_semi_axes_mm": ((6.0, 10.0), (5.0, 8.5)),
}


def _in_range(rng: np.random.Generator, key: str) -> float:
    low, high = CONUS_MORPHOMETRY[key]
    return float(rng.uniform(low, high))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _cord_profile(rng: np.random.Generator, nz: int, mm: float, z: np.ndarray):
    """The cord of :func:`conus_phantom` along z: ``(tip, top of the enlargement, the enlargement's
    semi-axes, the semi-axes' scale per slice)`` (voxels); the scale is 0 below the tip, rises over
    the taper (CSA ~ distance ** power), is 1 in the enlargement and the thoracic scale above it."""
    where = rng.random()
    tip = nz + 1.0 if where < 0.2 else (-1.0 if where < 0.3 else rng.uniform(0.15, 0.75) * nz)
    taper = _in_range(rng, "taper_mm") * mm
    power = _in_range(rng, "taper_power")
    enlargement_top = tip + taper + _in_range(rng, "enlargement_length_mm") * mm
    (ea, eb), (fa, fb) = CONUS_MORPHOMETRY["enlargement_semi_axes_mm"]
    semi = np.array([rng.uniform(ea, eb), rng.uniform(fa, fb)]) * mm
    thoracic = _in_range(rng, "thoracic_scale")
    above = np.clip((z - tip) / taper, 0.0, 1.0)
    scale = above ** (power / 2.0)  # semi-axes scale: CSA ~ above ** power
    scale *= 1.0 - (1.0 - thoracic) * _smoothstep((z - enlargement_top) / (20 * mm))
    return tip, enlargement_top, semi, scale


def _root(rng: np.random.Generator, course: dict, bundle, spread: float) -> np.ndarray:
    """One nerve root of :func:`conus_phantom` (a boolean volume): it leaves the cord's surface at
    a random level (ventral or dorsal, left or right) and descends to its place in the cauda
    equina, in the dorsal ``bundle`` (its centre, ``spread`` wide) or anywhere in the canal (None)."""
    nz, mm, z, xs, ys = course["nz"], course["mm"], course["z"], course["xs"], course["ys"]
    cx, cy, ccx, ccy, canal_r = course["cx"], course["cy"], course["ccx"], course["ccy"], course["canal_r"]
    semi, scale, tip, enlargement_top = course["semi"], course["scale"], course["tip"], course["enlargement_top"]
    radius = _in_range(rng, "root_radius_mm") * mm
    if bundle is not None:
        dx, dy = np.asarray(bundle) + rng.normal(0.0, spread, 2)
    else:
        a, r = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0.05, 0.8))
        dx, dy = r * canal_r[0] * np.cos(a), r * canal_r[1] * np.sin(a)
    side = rng.choice([-1.0, 1.0])  # left or right half of the cord
    ventral = rng.random() < 0.5
    theta = (rng.uniform(0.6, 1.2) if ventral else rng.uniform(1.9, 2.5)) * side  # from anterior (+y)
    exit_level = rng.uniform(tip, min(enlargement_top, nz + 40 * mm)) if rng.random() < 0.75 else nz + 100 * mm
    level = int(np.clip(np.rint(exit_level), 0, nz - 1))
    s = float(scale[level]) if exit_level < nz else 1.0
    surface = 1.0 + radius / max(float(semi.min() * max(s, 0.2)), 1.0)
    ex = np.sin(theta) * semi[0] * s * surface
    ey = np.cos(theta) * semi[1] * s * surface
    descent = rng.uniform(10, 40) * mm
    t = _smoothstep((exit_level - z) / descent)  # 0 at its exit from the cord, 1 in the cauda equina
    rx = ccx + (1 - t) * ex + t * (cx - ccx + dx) + _smooth_walk(nz, 0.5 * mm, rng)
    ry = ccy + (1 - t) * ey + t * (cy - ccy + dy) + _smooth_walk(nz, 0.5 * mm, rng)
    extent = z <= exit_level
    if rng.random() < 0.3:  # leaves the canal through a foramen before the bottom
        extent &= z >= rng.uniform(0.0, 0.6) * min(exit_level, nz)
    return (((xs - rx) ** 2 + (ys - ry) ** 2) <= radius**2) & extent


def conus_phantom(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    voxel_mm: float = 0.5,
    dorsal_roots: float = 0.5,
    n_roots: tuple[int, int] = (12, 40),
    dorsal_cord: float = 0.0,
) -> np.ndarray:
    """A random label map of the lower cord as the anatomy lies: enlargement, conus, filum, roots.

    Along z (inferior -> superior) the cord has the thoracic cross-section at the top, widens
    into the lumbar enlargement, then tapers over ``taper_mm`` to a point, the conus tip: its CSA
    falls as ``(distance above the tip / taper) ** power`` (:data:`CONUS_MORPHOMETRY`). The label
    of the cord ends exactly at the tip. Below it the filum terminale (0.4-0.9 mm radius, not cord:
    drawn as a root) continues the cord's course to the bottom. The nerve roots (12-40, 0.4-1 mm
    radius) leave the cord *beside* the enlargement and the conus, at its antero- and
    postero-lateral surface (ventral and dorsal roots), from well above the tip, and run down
    around it, moving away from the cord over 10-40 mm to their place in the cauda equina:
    spread over the canal (a prone patient, or a wide canal) or, with probability
    ``dorsal_roots``, settled in a bundle against the posterior wall (supine). A share of the
    roots enters from above the field of view (roots of higher segments passing the cord), some
    leave the canal before the bottom (through a foramen). So just above the tip the cord is
    surrounded by roots that touch it, and below it only roots and the filum remain. In a fifth
    of the phantoms the tip lies above the field of view (cauda equina only), in a tenth below
    it (cord only, with roots leaving it). ``n_roots``: the range of the number of roots drawn.
    ``dorsal_cord``: the probability that, where the roots settled dorsally (a supine patient),
    the cord settled with them: it moves back until 1-2.5 mm of CSF are left behind its enlargement,
    its enlargement and conus among the root bundle as in supine images (0: central, same stream).
    Returns uint8 labels (classes of this module) of ``shape``; the cord is ``labels == CORD``.
    """
    nz, mm, xs, ys, cx, cy = _canal_course(shape, rng, voxel_mm, dorsal_roots)
    z = np.arange(nz, dtype=np.float32)
    (la, lb), (aa, ab) = CONUS_MORPHOMETRY["canal_semi_axes_mm"]
    canal_r = rng.uniform(la, lb) * mm, rng.uniform(aa, ab) * mm
    canal = ((xs - cx) / canal_r[0]) ** 2 + ((ys - cy) / canal_r[1]) ** 2 <= 1.0
    tip, enlargement_top, semi, scale = _cord_profile(rng, nz, mm, z)
    ccx = cx + _smooth_walk(nz, 1 * mm, rng)
    ccy = cy + rng.uniform(-1.5, 1.5) * mm + _smooth_walk(nz, 1 * mm, rng)
    filum_r = _in_range(rng, "filum_radius_mm") * mm
    dorsal = rng.random() < dorsal_roots
    if dorsal:  # the bundle's centre, against the posterior wall (-y in RPI)
        angle, depth = rng.uniform(-0.5, 0.5) - np.pi / 2, rng.uniform(0.45, 0.75)
        bundle = depth * canal_r[0] * np.cos(angle), depth * canal_r[1] * np.sin(angle)
        spread = rng.uniform(1.0, 3.0) * mm
        if dorsal_cord > 0 and rng.random() < dorsal_cord:  # the cord settles dorsally with its roots
            room = max(0.0, canal_r[1] - semi[1] - rng.uniform(1.0, 2.5) * mm)  # 1-2.5 mm of CSF behind it
            ccy = ccy - float(np.mean(ccy - cy)) - room  # its own wander kept
    with np.errstate(divide="ignore", invalid="ignore"):
        ellipse = ((xs - ccx) / (semi[0] * scale)) ** 2 + ((ys - ccy) / (semi[1] * scale)) ** 2
    cord = (ellipse <= 1.0) & (scale > 0) & (z > tip) & canal
    below = z <= tip
    roots = (((xs - ccx) ** 2 + (ys - ccy) ** 2) <= filum_r**2) & below & canal
    course = dict(
        nz=nz, mm=mm, z=z, xs=xs, ys=ys, cx=cx, cy=cy, ccx=ccx, ccy=ccy, canal_r=canal_r, semi=semi, scale=scale,
        tip=tip, enlargement_top=enlargement_top,
    )  # fmt: skip
    for _ in range(int(rng.integers(n_roots[0], n_roots[1] + 1))):
        roots |= _root(rng, course, bundle if dorsal else None, spread if dorsal else 0.0) & canal
    return _with_shells(canal, voxel_mm, {CSF: canal, ROOTS: roots & ~cord, CORD: cord})


def _split_randomly(labels: np.ndarray, cls: int, parts: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Sub-class index (0..parts-1) of every voxel of class ``cls``, by quantiles of smooth noise."""
    noise = ndimage.gaussian_filter(rng.normal(size=labels.shape), sigma, mode="reflect")
    inside = labels == cls
    sub = np.zeros(labels.shape, dtype=np.int64)
    if inside.any() and parts > 1:
        edges = np.quantile(noise[inside], np.linspace(0, 1, parts + 1)[1:-1])
        sub[inside] = np.searchsorted(edges, noise[inside])
    return sub


def grey_matter_core(cord: np.ndarray, depth: float) -> np.ndarray:
    """The inner part of the cord on every axial slice: voxels deeper than ``depth`` (0-1) of the
    slice's largest in-plane distance to the cord's border (an elliptic core standing for the grey
    matter, which is brighter than the white matter on T2*w and darker on T1w)."""
    cord = np.asarray(cord, dtype=bool)
    core = np.zeros_like(cord)
    slices = np.flatnonzero(cord.any(axis=tuple(range(cord.ndim - 1)))) if cord.ndim == 3 else [None]
    for z in slices:
        plane = cord[..., z] if z is not None else cord
        inside = ndimage.distance_transform_edt(plane)
        deepest = float(inside.max())
        if deepest >= 3.0:  # a core only where the cord is at least ~6 voxels across
            if z is None:
                core = inside > depth * deepest
            else:
                core[..., z] = inside > depth * deepest
    return core


def synthesise(labels: np.ndarray, rng: np.random.Generator, grey_matter: float = 0.0) -> np.ndarray:
    """One random image of a label map (float32 in about [0, 1], before domain randomisation).

    Every class (and each random sub-region of classes 4 and 5) gets a uniform random mean in
    [0, 1] and a random within-class texture (smoothed Gaussian noise); nerve roots get the
    cord's intensity half of the time (only their shape tells them apart); the result is
    blurred by a random partial-volume kernel. With probability ``grey_matter`` the cord gets a
    core (:func:`grey_matter_core`, 35-65 % deep) of its own intensity, half of the time the
    CSF's: the cord's border is then its outer edge whatever lies inside (no draw is made when
    ``grey_matter`` is 0, so the images of a seed are those of the recipe before it existed).
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {labels.shape}")
    if not 0.0 <= grey_matter <= 1.0:
        raise ValueError(f"grey_matter must be in [0, 1], got {grey_matter}")
    codes = labels.astype(np.int64)
    for cls in (BONE, OUTER):
        sub = _split_randomly(labels, cls, int(rng.integers(1, 4)), rng, sigma=float(rng.uniform(2.0, 6.0)))
        codes = np.where(labels == cls, N_CLASSES + (cls - BONE) * 4 + sub, codes)
    n_codes = N_CLASSES + 8
    core = grey_matter > 0 and rng.random() < grey_matter
    if core:
        codes = np.where(grey_matter_core(labels == CORD, rng.uniform(0.35, 0.65)), n_codes, codes)
        n_codes += 1
    means = rng.uniform(0.0, 1.0, n_codes).astype(np.float32)
    if rng.random() < 0.5:
        means[ROOTS] = means[CORD]
    if core and rng.random() < 0.5:
        means[n_codes - 1] = means[CSF]
    stds = rng.uniform(0.0, 0.08, n_codes).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32), float(rng.uniform(0.3, 1.5)))
    texture /= max(float(texture.std()), 1e-6)
    image = means[codes] + stds[codes] * texture
    return ndimage.gaussian_filter(image, float(rng.uniform(0.0, 1.0))).astype(np.float32)
