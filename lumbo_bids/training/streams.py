"""The raw sample streams of training: which patch (or 2D window) of which case, epoch after epoch.

For each epoch a plan of samples (case, centre, augmentation seed) is drawn from
``np.random.default_rng([seed, epoch])``; the volumes are opened with ``np.load(mmap_mode="r")``
(:class:`~lumbo_bids.training.cases.CaseVolumes`) and only the patches are copied out, so memory
stays bounded whatever the number and size of the cases. Each sample carries the seed of its
own augmentation: the stream is a function of ``seed`` and the epoch only. Validation streams
(``training=False``) are finite and fixed (one seed, epoch independent).
:mod:`lumbo_bids.training.dataset` wraps them as ``tf.data`` pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .cases import CaseVolumes, TrainingCase
from .exit_guard import GUARD
from .patches import extract_patch, gaussian_heatmap_2d, patch_bounds, sample_patch_centres, sample_window_centre_2d

Sample = tuple[np.ndarray, np.ndarray, np.int64]


def _cases_per_sample(n_cases: int, n_samples: int, rng: np.random.Generator, weights=None) -> np.ndarray:
    """Balanced assignment of samples to cases (each case ``n // n_cases`` times, or once more), or
    in proportion to ``weights`` (each case the floor of its share, the rest drawn by the fractions)."""
    if weights is None or np.all(np.asarray(weights) == weights[0]):
        return np.sort(np.resize(rng.permutation(n_cases), n_samples))
    share = n_samples * np.asarray(weights, dtype=float) / float(np.sum(weights))
    counts = np.floor(share).astype(int)
    rest, fraction = n_samples - int(counts.sum()), share - counts
    if rest > 0:
        counts[rng.choice(n_cases, size=rest, replace=False, p=fraction / fraction.sum())] += 1
    return np.repeat(np.arange(n_cases), counts)


def _owners(
    synthetic: np.ndarray, n_samples: int, rng: np.random.Generator, fraction: float | None, weights: np.ndarray
) -> np.ndarray:
    """Case of every sample: over the cases by their ``weights``, or ``fraction`` of them synthetic."""
    if fraction is None or synthetic.all() or not synthetic.any():
        return _cases_per_sample(len(synthetic), n_samples, rng, weights)
    n_syn = int(round(n_samples * fraction))
    syn, real = np.flatnonzero(synthetic), np.flatnonzero(~synthetic)
    picks = [
        syn[_cases_per_sample(len(syn), n_syn, rng, weights[syn])],
        real[_cases_per_sample(len(real), n_samples - n_syn, rng, weights[real])],
    ]
    return np.sort(np.concatenate(picks))


def _weights(cases: Sequence[TrainingCase]) -> np.ndarray:
    weights = np.array([c.weight for c in cases], dtype=float)
    if not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ValueError(f"every case's weight must be a positive number, got {sorted(set(weights.tolist()))}")
    return weights


def _stream(
    plan: Callable[[np.random.Generator], list[tuple]],
    sample: Callable[[tuple], tuple[np.ndarray, np.ndarray]],
    seed: int,
    training: bool,
    start_epoch: int,
) -> Iterator[Sample]:
    """Yield ``(image, target, augmentation_seed)`` epoch after epoch (once if not training)."""
    epoch = start_epoch
    while True:
        with GUARD.call():
            rng = np.random.default_rng([seed, epoch] if training else [seed, 2**31 - 1])
            items = plan(rng)
            order = rng.permutation(len(items)) if training else np.arange(len(items))
            aug_seeds = rng.integers(0, 2**62, size=len(items))
        for k, idx in enumerate(order):
            if GUARD.exiting.is_set():
                return
            with GUARD.call():
                image, target = sample(items[idx])
            yield image, target, np.int64(aug_seeds[k])
        if not training:
            return
        epoch += 1


def synthetic_patch(labels: np.ndarray, seed: int, grey_matter: float = 0.0) -> np.ndarray:
    """A new synthetic image of a label patch, standardised like a real one."""
    from ..intensity import robust_standardise
    from .synth import synthesise

    image = synthesise(labels.astype(np.uint8), np.random.default_rng(seed), grey_matter=grey_matter)
    return robust_standardise(image, np.ones(image.shape, dtype=bool))  # a constant patch becomes zeros


def _synthetic_window(labels: np.ndarray, seed: int) -> np.ndarray:
    """A new synthetic 2D image of a label window, normalised as the localiser's input."""
    from ..model.localise import localiser_input
    from .synth import synthesise

    image = synthesise(labels.astype(np.uint8), np.random.default_rng(seed))
    return localiser_input(image + 1.0)  # > 0 everywhere: the whole window is foreground


def iter_patches(
    cases: Sequence[TrainingCase],
    patch_size: Sequence[int] = (48, 48, 48),
    patches_per_epoch: int | None = None,
    patches_per_case: int = 8,
    cord_fraction: float = 0.7,
    seed: int = 0,
    training: bool = True,
    start_epoch: int = 0,
    synthetic_fraction: float | None = None,
    grey_matter: float = 0.0,
    end_fraction: float = 0.0,
) -> Iterator[Sample]:
    """The raw (unaugmented) 3D patch stream behind :func:`~lumbo_bids.training.dataset.patch_dataset`.

    Samples are spread evenly over the cases, or, with ``synthetic_fraction``, that fraction
    over the synthetic cases and the rest over the real ones; within each, in proportion to the
    cases' ``weight``. ``end_fraction`` of a synthetic
    case's cord patches are centred around the ends of its cord (the ends of a phantom's label
    are true; a real mask may stop where the annotator stopped, so real cases get none).

    Yields
    ------
    image : np.ndarray
        float32 ``patch_size`` patch (zero outside the volume).
    mask : np.ndarray
        float32 binary patch.
    seed : np.int64
        Seed of the sample's augmentation.
    """
    size = tuple(int(s) for s in patch_size)
    if len(size) != 3 or not cases:
        raise ValueError(f"need a 3D patch size and at least one case (got {size}, {len(cases)} cases)")
    if synthetic_fraction is not None and not 0.0 <= synthetic_fraction <= 1.0:
        raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
    volumes = CaseVolumes(cases)
    n_samples = patches_per_epoch if (training and patches_per_epoch) else patches_per_case * len(cases)
    synthetic = np.array([c.synthetic for c in cases], dtype=bool)
    weights = _weights(cases)

    def plan(rng: np.random.Generator) -> list[tuple]:
        items: list[tuple] = []
        owner = _owners(synthetic, n_samples, rng, synthetic_fraction, weights)
        for i in np.unique(owner):
            n = int(np.count_nonzero(owner == i))
            mask = volumes.pair(int(i))[1]
            ends = end_fraction if synthetic[i] else 0.0
            centres = sample_patch_centres(mask, n, size, cord_fraction, rng, volumes.cord_index(int(i)), ends)
            items.extend((int(i), c, int(s)) for c, s in zip(centres, rng.integers(0, 2**62, size=len(centres))))
        return items

    def sample(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        image, mask = (extract_patch(v, item[1], size).astype(np.float32, copy=False) for v in volumes.pair(item[0]))
        if cases[item[0]].synthetic:
            image = synthetic_patch(image, item[2], grey_matter)
        return image, mask

    return _stream(plan, sample, seed, training, start_epoch)


def iter_heatmap_slices(
    cases: Sequence[TrainingCase],
    patch_size: Sequence[int] = (96, 96),
    slices_per_epoch: int | None = None,
    slices_per_case: int = 16,
    sigma: float = 3.0,
    cord_probability: float = 0.8,
    seed: int = 0,
    training: bool = True,
    start_epoch: int = 0,
) -> Iterator[Sample]:
    """The raw 2D localiser stream behind :func:`~lumbo_bids.training.dataset.heatmap_slice_dataset`.

    Every sample is an axial slice chosen uniformly in a whole volume (slices without cord, for
    instance below the conus, included: their target is empty) cut to a ``patch_size`` window
    that contains the cord point with probability ``cord_probability``
    (:func:`~lumbo_bids.training.patches.sample_window_centre_2d`); the target is a Gaussian of
    peak 1 and ``sigma`` voxels around the centre of mass of the slice's mask. A synthetic
    case's volume is a label map: each of its windows is a new image of the window's labels
    (:func:`_synthetic_window`), so a phantom's roots and conus are seen in every contrast.
    """
    size = tuple(int(s) for s in patch_size)
    if len(size) != 2 or not cases:
        raise ValueError(f"need a 2D patch size and at least one case (got {size}, {len(cases)} cases)")
    volumes = CaseVolumes(cases)
    n_samples = slices_per_epoch if (training and slices_per_epoch) else slices_per_case * len(cases)
    weights = _weights(cases)

    def plan(rng: np.random.Generator) -> list[tuple]:
        items: list[tuple] = []
        for i in _cases_per_sample(len(cases), n_samples, rng, weights):
            shape = volumes.pair(int(i))[0].shape
            z = int(rng.integers(shape[2]))
            xy = volumes.centerline(int(i))[z]
            centre = sample_window_centre_2d(shape[:2], size, xy, cord_probability, rng)
            synth_seed = int(rng.integers(0, 2**62)) if cases[int(i)].synthetic else 0  # real streams as before
            items.append((int(i), int(centre[0]), int(centre[1]), z, synth_seed))
        return items

    def sample(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        i, cx, cy, z, synth_seed = item
        window = extract_patch(volumes.pair(i)[0], (cx, cy, z), (*size, 1))[..., 0]
        window = _synthetic_window(window, synth_seed) if cases[i].synthetic else window.astype(np.float32)
        return window, gaussian_heatmap_2d(size, volumes.centerline(i)[z] - patch_bounds((cx, cy), size)[0], sigma)

    return _stream(plan, sample, seed, training, start_epoch)
