"""Random data augmentation of (image, target) pairs: 3D patches and 2D slices (numpy/scipy).

Every random draw comes from the ``np.random.Generator`` passed in, so a pair augmented twice
with generators seeded alike comes out identical. Geometry is applied to image and target
through one resampling (flip, rotation + in-plane scaling and elastic displacement composed
into a single coordinate map, :func:`scipy.ndimage.map_coordinates`, linear interpolation,
border values repeated); a binary target is interpolated linearly then thresholded at 0.5, so
it stays binary and aligned with the image. Intensity changes (scale/shift, gamma, Gaussian
noise) touch the image only.

Axes follow the volumes (RPI): axis 0 is left-right (the flipped axis), axes (0, 1) the axial
plane (rotation and scaling), axis 2 the cord axis (small tilts only).

**Domain randomisation** (``p_lut`` ... ``p_rician``, off unless asked for, see
:meth:`AugmentConfig.domain_randomised`): so that contrast, resolution and artefacts stop
mattering, the image is mapped to [0, 1], passed through a random non-monotonic look-up table
(or inverted, T1/T2-like), through a simulated acquisition (random slice thickness up to 5 mm
and in-plane resolution up to 1.5 mm: partial-volume blur then back to the 0.5 mm grid; thick
slices along the cord axis only, or with ``thick_axes="any"`` also sagittal and coronal ones,
as most lumbar images are acquired, with a Gaussian or a box slice profile; Gibbs
ringing from truncated k-space; a Nyquist ghost; a smooth multiplicative bias field; Rician
noise) and finally standardised again with the robust z-score that inference uses
(:func:`lumbo_bids.intensity.robust_standardise`).

**Clean view** (``augment_pair(..., clean_view=True)``, a clean teacher's input,
:mod:`lumbo_bids.training.distil`): a second target channel, the image after the flip and the
spatial transform only (standardised alike), before contrast, resolution, artefacts and noise;
the random stream and so the augmented image are the same with and without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .acquisition import bias_field, gibbs_ringing, random_lut, simulate_resolution, unit_range


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; ``strength`` in [0, 1] scales every probability and magnitude.

    Attributes
    ----------
    strength : float
        Global factor: 0 switches everything off, 1 uses the values below as they are.
    p_flip : float
        Probability of a left-right flip (axis 0).
    p_spatial : float
        Probability of a rotation + scaling.
    max_rotation_deg : float
        Maximum in-plane (axes 0, 1) rotation, degrees (uniform in +-max).
    max_tilt_deg : float
        Maximum rotation in the planes (0, 2) and (1, 2) of 3D patches, degrees.
    scale_range : tuple of float
        In-plane zoom factor range (1 = none).
    p_elastic : float
        Probability of an elastic distortion.
    elastic_alpha : float
        Largest displacement of the elastic field, in voxels.
    elastic_sigma : float
        Smoothness (Gaussian sigma, voxels) of the elastic field.
    p_intensity : float
        Probability of a random intensity scale and shift.
    intensity_scale : float
        Multiplicative factor drawn in ``1 +- intensity_scale``.
    intensity_shift : float
        Additive offset drawn in ``+- intensity_shift`` (intensities are standardised).
    p_gamma : float
        Probability of a gamma change (on the patch's min-max range).
    gamma_range : tuple of float
        Gamma range (drawn log-uniformly).
    p_noise : float
        Probability of additive Gaussian noise.
    noise_std : float
        Largest noise standard deviation (drawn uniformly in ``[0, noise_std]``).
    p_lut ... rician_std
        Domain randomisation (module docstring); ``max_slice_factor`` and ``max_inplane_factor``
        bound the simulated voxel size, in voxels of the patch.
    sagittal_share, coronal_share : float
        Of the simulated acquisitions (``p_lowres``), the share with thick slices along
        left-right (sagittal, axis 0) and anterior-posterior (coronal, axis 1); the rest are
        axial (thick along axis 2). Both 0: the thick axis is always axis 2 and the slice
        thickness is drawn from 1 voxel up, as before these options existed (same random stream).
        Otherwise the thick axis gets 2 to ``max_slice_factor`` voxels (1-5 mm at 0.5 mm), the
        other two an in-plane size of 1 to ``max_inplane_factor``.
    p_box_profile : float
        With any-axis thick slices, probability of a box slice profile (2D TSE-like) instead of a
        Gaussian one.
    """

    strength: float = 1.0
    p_flip: float = 0.5
    p_spatial: float = 0.7
    max_rotation_deg: float = 12.0
    max_tilt_deg: float = 5.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    p_elastic: float = 0.3
    elastic_alpha: float = 2.0
    elastic_sigma: float = 6.0
    p_intensity: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    p_noise: float = 0.3
    noise_std: float = 0.05
    p_lut: float = 0.0
    p_invert: float = 0.0
    p_lowres: float = 0.0
    max_slice_factor: float = 10.0
    max_inplane_factor: float = 3.0
    p_bias: float = 0.0
    bias_std: float = 0.3
    p_ringing: float = 0.0
    p_ghost: float = 0.0
    p_rician: float = 0.0
    rician_std: float = 0.08
    sagittal_share: float = 0.0
    coronal_share: float = 0.0
    p_box_profile: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") or f.name == "strength":
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"AugmentConfig.{f.name} must be in [0, 1], got {value}")
            elif isinstance(value, tuple):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
                if len(value) != 2 or not 0 < value[0] <= value[1]:
                    raise ValueError(f"AugmentConfig.{f.name} must be (low, high) with 0 < low <= high")
            elif value < 0:
                raise ValueError(f"AugmentConfig.{f.name} must be >= 0, got {value}")
        if self.max_slice_factor < 1 or self.max_inplane_factor < 1:
            raise ValueError("AugmentConfig.max_slice_factor and max_inplane_factor must be >= 1")
        if self.elastic_sigma <= 0:
            raise ValueError("AugmentConfig.elastic_sigma must be > 0")
        if self.sagittal_share + self.coronal_share > 1.0:
            raise ValueError("AugmentConfig.sagittal_share + coronal_share must be <= 1")

    @classmethod
    def identity(cls) -> AugmentConfig:
        """A configuration that changes nothing (every probability 0)."""
        return cls(p_flip=0.0, p_spatial=0.0, p_elastic=0.0, p_intensity=0.0, p_gamma=0.0, p_noise=0.0)

    @classmethod
    def domain_randomised(cls, strength: float = 1.0, amount: float = 1.0, thick_axes: str = "axial") -> AugmentConfig:
        """The default augmentation plus domain randomisation, its probabilities times ``amount``.

        ``thick_axes``: ``"axial"`` simulates thick slices along the cord axis only (the recipe
        before any-axis slices); ``"any"`` also as sagittal (40 %) and coronal (15 %) slices,
        with a box slice profile half of the time; ``"mostly_sagittal"`` 60 % sagittal and 10 %
        coronal; ``"balanced"`` 35 % sagittal and 35 % coronal (:data:`THICK_AXES`).
        """
        if thick_axes not in THICK_AXES:
            raise ValueError(f"thick_axes must be one of {sorted(THICK_AXES)}, got {thick_axes!r}")
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"domain randomisation amount must be in [0, 1], got {amount}")
        probs = {
            "p_lut": 0.5,
            "p_invert": 0.3,
            "p_lowres": 0.6,
            "p_bias": 0.5,
            "p_ringing": 0.15,
            "p_ghost": 0.15,
            "p_rician": 0.5,
        }
        return cls(strength=strength, **{k: v * amount for k, v in probs.items()}, **THICK_AXES[thick_axes])

    @property
    def randomises_domain(self) -> bool:
        """True when any domain-randomisation step can be drawn."""
        return any(getattr(self, n) > 0 for n in ("p_lut", "p_invert", "p_lowres", "p_bias", "p_ringing", "p_ghost", "p_rician"))

    def resolved(self) -> AugmentConfig:
        """The equivalent configuration with ``strength`` folded into the values (strength 1)."""
        s = self.strength

        def toward_one(r: tuple[float, float]) -> tuple[float, float]:
            return (1.0 + s * (r[0] - 1.0), 1.0 + s * (r[1] - 1.0))

        return replace(
            self,
            strength=1.0,
            **{f.name: getattr(self, f.name) * s for f in fields(self) if f.name.startswith("p_")},
            max_rotation_deg=self.max_rotation_deg * s,
            max_tilt_deg=self.max_tilt_deg * s,
            scale_range=toward_one(self.scale_range),
            elastic_alpha=self.elastic_alpha * s,
            intensity_scale=self.intensity_scale * s,
            intensity_shift=self.intensity_shift * s,
            gamma_range=(self.gamma_range[0] ** s, self.gamma_range[1] ** s),
            noise_std=self.noise_std * s,
            max_slice_factor=1.0 + s * (self.max_slice_factor - 1.0),
            max_inplane_factor=1.0 + s * (self.max_inplane_factor - 1.0),
            bias_std=self.bias_std * s,
            rician_std=self.rician_std * s,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown AugmentConfig keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


#: The slice orientations of simulated acquisitions (:meth:`AugmentConfig.domain_randomised`).
THICK_AXES = {
    "axial": {},
    "any": {"sagittal_share": 0.4, "coronal_share": 0.15, "p_box_profile": 0.5},
    "mostly_sagittal": {"sagittal_share": 0.6, "coronal_share": 0.1, "p_box_profile": 0.5},
    "balanced": {"sagittal_share": 0.35, "coronal_share": 0.35, "p_box_profile": 0.5},
}


def _rotation(ndim: int, angles_deg: dict[tuple[int, int], float]) -> np.ndarray:
    """Product of plane rotations ``{(i, j): angle}`` as an ``ndim x ndim`` matrix."""
    matrix = np.eye(ndim)
    for (i, j), angle in angles_deg.items():
        rad = np.deg2rad(angle)
        r = np.eye(ndim)
        r[i, i] = r[j, j] = np.cos(rad)
        r[i, j], r[j, i] = -np.sin(rad), np.sin(rad)
        matrix = r @ matrix
    return matrix


def _elastic_field(shape: tuple[int, ...], alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """In-plane smooth random displacements ``(ndim, *shape)`` whose largest magnitude is ``alpha``."""
    field = np.zeros((len(shape), *shape))
    for axis in range(2):  # axes 0 and 1 only: the cord axis is not distorted
        d = ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, size=shape), sigma, mode="reflect")
        peak = np.abs(d).max()
        field[axis] = d * (alpha / peak) if peak > 0 else 0.0
    return field


def _spatial(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Draw and apply rotation/scaling and elastic distortion; ``changed`` is False if none."""
    ndim = image.ndim
    matrix = np.eye(ndim)
    displacement: np.ndarray | None = None
    if rng.random() < cfg.p_spatial:
        angles = {(0, 1): rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)}
        if ndim == 3:
            angles[(0, 2)] = rng.uniform(-cfg.max_tilt_deg, cfg.max_tilt_deg)
            angles[(1, 2)] = rng.uniform(-cfg.max_tilt_deg, cfg.max_tilt_deg)
        zoom = np.ones(ndim)
        zoom[:2] = rng.uniform(*cfg.scale_range)
        # output voxel p samples the input at R (p - c) / zoom + c: content magnified by zoom
        matrix = _rotation(ndim, angles) @ np.diag(1.0 / zoom)
    if rng.random() < cfg.p_elastic and cfg.elastic_alpha > 0:
        displacement = _elastic_field(image.shape, cfg.elastic_alpha, cfg.elastic_sigma, rng)
    if np.allclose(matrix, np.eye(ndim)) and displacement is None:
        return image, target, False
    centre = (np.asarray(image.shape, dtype=np.float64) - 1.0) / 2.0
    grid = np.indices(image.shape, dtype=np.float64).reshape(ndim, -1) - centre[:, None]
    coords = matrix @ grid + centre[:, None]
    if displacement is not None:
        coords += displacement.reshape(ndim, -1)
    coords = coords.reshape(ndim, *image.shape)
    image = ndimage.map_coordinates(image, coords, order=1, mode="nearest")
    target = ndimage.map_coordinates(target.astype(np.float32), coords, order=1, mode="nearest")
    return image, target, True


def _intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random scale/shift, gamma and noise of the image."""
    if rng.random() < cfg.p_intensity:
        scale = rng.uniform(1.0 - cfg.intensity_scale, 1.0 + cfg.intensity_scale)
        shift = rng.uniform(-cfg.intensity_shift, cfg.intensity_shift)
        image = image * np.float32(scale) + np.float32(shift)
    if rng.random() < cfg.p_gamma:
        gamma = float(np.exp(rng.uniform(np.log(cfg.gamma_range[0]), np.log(cfg.gamma_range[1]))))
        lo, hi = float(image.min()), float(image.max())
        if hi > lo:
            image = lo + (hi - lo) * ((image - lo) / (hi - lo)) ** np.float32(gamma)
    if rng.random() < cfg.p_noise and cfg.noise_std > 0:
        std = rng.uniform(0.0, cfg.noise_std)
        image = image + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    return image


def _thick_slices_any_axis(unit: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """A simulated 2D acquisition with thick slices along a random axis: sagittal (axis 0),
    coronal (axis 1) or axial (axis 2; for a 2D axial window: in-plane voxels only)."""
    u = rng.random()
    thick = 0 if u < cfg.sagittal_share else (1 if u < cfg.sagittal_share + cfg.coronal_share else 2)
    inplane = rng.uniform(1.0, cfg.max_inplane_factor)
    factors = [inplane] * 3
    factors[thick] = rng.uniform(min(2.0, cfg.max_slice_factor), cfg.max_slice_factor)
    profile = "box" if rng.random() < cfg.p_box_profile else "gaussian"
    return simulate_resolution(unit, tuple(factors[: unit.ndim]), profile)


def _randomise_domain(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Contrast, resolution and artefact randomisation (see the module docstring), restandardised."""
    unit = unit_range(image)
    if rng.random() < cfg.p_lut:
        unit = random_lut(unit, rng)
    if rng.random() < cfg.p_invert:
        unit = 1.0 - unit
    if rng.random() < cfg.p_lowres:
        if cfg.sagittal_share > 0 or cfg.coronal_share > 0:
            unit = _thick_slices_any_axis(unit, rng, cfg)
        else:
            inplane = rng.uniform(1.0, cfg.max_inplane_factor)
            factors = (inplane, inplane) + ((rng.uniform(1.0, cfg.max_slice_factor),) if image.ndim == 3 else ())
            unit = simulate_resolution(unit, factors)
    if rng.random() < cfg.p_bias and cfg.bias_std > 0:
        unit = unit * bias_field(unit.shape, cfg.bias_std, rng)
    if rng.random() < cfg.p_ringing:
        unit = gibbs_ringing(unit, int(rng.integers(2)), rng.uniform(0.3, 0.7))
    if rng.random() < cfg.p_ghost:
        axis = int(rng.integers(2))
        unit = unit + np.float32(rng.uniform(0.05, 0.25)) * np.roll(unit, unit.shape[axis] // 2, axis=axis)
    if rng.random() < cfg.p_rician and cfg.rician_std > 0:
        sd = rng.uniform(0.0, cfg.rician_std)
        unit = np.sqrt((unit + rng.normal(0, sd, unit.shape)) ** 2 + rng.normal(0, sd, unit.shape) ** 2)
    return _standardised(unit)


def _standardised(unit: np.ndarray) -> np.ndarray:
    """The robust z-score of inference over the whole patch (a constant patch becomes zeros)."""
    from ..intensity import robust_standardise

    unit = np.asarray(unit, dtype=np.float32)
    return robust_standardise(unit, np.ones(unit.shape, dtype=bool))


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig | None = None,
    binary: bool = True,
    clean_view: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment an image and its target the same way (3D patch or 2D slice).

    Parameters
    ----------
    image : np.ndarray
        2D ``(X, Y)`` or 3D ``(X, Y, Z)`` image.
    mask : np.ndarray
        Target of the same shape: a binary mask, or (``binary=False``) a soft map such as the
        localiser's heat-map.
    rng : np.random.Generator
        Source of every random draw.
    cfg : AugmentConfig, optional
        Settings (default :class:`AugmentConfig`); ``strength`` is applied here.
    binary : bool
        Threshold the resampled target at 0.5 (keep False for soft targets).
    clean_view : bool
        Also return the clean view (module docstring) as the target's second channel.

    Returns
    -------
    image : np.ndarray
        float32, same shape.
    mask : np.ndarray
        Same shape and dtype as ``mask``; binary (0/1) when ``binary`` and resampled.
        Both are the inputs' values (as float32 for the image) when nothing was drawn.
        With ``clean_view``: float32 ``(*shape, 2)``, the target then the clean view.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    if image.ndim not in (2, 3):
        raise ValueError(f"augment_pair works on 2D slices or 3D patches, got {image.ndim}D")
    cfg = (cfg or AugmentConfig()).resolved()
    out_dtype = mask.dtype
    image = np.asarray(image, dtype=np.float32)
    target = np.asarray(mask)
    if rng.random() < cfg.p_flip:
        image, target = image[::-1], target[::-1]
    image, target, resampled = _spatial(image, target, rng, cfg)
    if resampled and binary:
        target = target >= 0.5
    clean = None if not clean_view else (_standardised(unit_range(image)) if cfg.randomises_domain else image.copy())
    if cfg.randomises_domain:
        image = _randomise_domain(image, rng, cfg)
    image = _intensity(image, rng, cfg)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if clean is not None:
        return image, np.stack([np.asarray(target, dtype=np.float32), clean], axis=-1)
    return image, np.ascontiguousarray(target).astype(out_dtype, copy=False)
