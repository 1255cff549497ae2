"""Streaming ``tf.data`` pipelines of training patches (3D segmentation, 2D localiser).

Cases are ``.npy`` files on disk. A Python generator draws, for each epoch, a plan of samples
(case, centre, augmentation seed) from ``np.random.default_rng([seed, epoch])``, opens the
volumes with ``np.load(mmap_mode="r")`` and copies out only the patches, so memory stays
bounded whatever the number and size of the cases. Augmentation runs in a parallel
``Dataset.map`` (order kept), each sample with its own generator seeded from the plan: the
stream is a function of ``seed`` and the epoch only. Validation streams (``training=False``)
are finite, fixed (one seed, epoch independent) and never augmented.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import AugmentConfig, augment_pair
from .patches import (
    cord_slices,
    extract_patch,
    gaussian_heatmap_2d,
    mask_centerline,
    patch_bounds,
    sample_patch_centres,
    sample_window_centre_2d,
)

Sample = tuple[np.ndarray, np.ndarray, np.int64]


class _ExitGuard:
    """Stop the streams and wait for their Python calls to finish before the interpreter exits.

    A tf.data thread that enters Python while the interpreter finalises is terminated, and the
    iterator's destructor then waits for it forever: a process whose iterator is still alive at
    exit (a global, the traceback of an interrupted ``fit``) would hang instead of exiting.
    """

    def __init__(self) -> None:
        self.exiting = threading.Event()
        self._lock = threading.Lock()
        self._active, self._last = 0, 0.0

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active, self._last = self._active - 1, time.monotonic()

    def drain(self, quiet: float = 0.25, timeout: float = 10.0) -> None:
        self.exiting.set()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._active == 0 and time.monotonic() - self._last > quiet:
                    return
            time.sleep(0.02)


_GUARD = _ExitGuard()
atexit.register(_GUARD.drain)


@dataclass(frozen=True)
class TrainingCase:
    """One preprocessed image and its binary cord mask, stored as ``.npy`` files.

    For the segmentation model both are the per-slice crops around the centerline; for the
    localiser (:func:`heatmap_slice_dataset`) both are whole RPI volumes and the target
    heat-map is made from the mask's centerline on the fly.
    """

    subject: str  # e.g. "sub-01"
    name: str  # unique id, e.g. the source file stem
    image: Path  # .npy float32 (X, Y, Z); for a synthetic case, uint8 labels (lumbo_bids.model.synth)
    mask: Path  # .npy uint8, same shape, binary
    synthetic: bool = False  # image is a label map: every patch drawn from it is a new synthetic image


class _Volumes:
    """Memory maps of the cases (a few kept open) and cached per-case indices."""

    def __init__(self, cases: Sequence[TrainingCase], max_open: int = 8) -> None:
        self.cases = list(cases)
        self.max_open = max_open
        self._open: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cord: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._centerline: dict[int, np.ndarray] = {}

    def array(self, path: Path) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        arr = np.load(path, mmap_mode="r")
        self._open[path] = arr
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return arr

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        case = self.cases[i]
        image, mask = self.array(Path(case.image)), self.array(Path(case.mask))
        if image.shape != mask.shape or image.ndim != 3:
            raise ValueError(f"case {case.name}: image {image.shape} and mask {mask.shape} must be the same 3D shape")
        return image, mask

    def cord_index(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached :func:`cord_slices` of case ``i``'s mask (a few ints a slice)."""
        if i not in self._cord:
            self._cord[i] = cord_slices(self.pair(i)[1])
        return self._cord[i]

    def centerline(self, i: int) -> np.ndarray:
        """Cached :func:`mask_centerline` of case ``i`` (``(Z, 2)`` floats)."""
        if i not in self._centerline:
            self._centerline[i] = mask_centerline(self.pair(i)[1])
        return self._centerline[i]


def _cases_per_sample(n_cases: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced assignment of samples to cases (each case ``n // n_cases`` times, or once more)."""
    return np.sort(np.resize(rng.permutation(n_cases), n_samples))


def _owners(synthetic: np.ndarray, n_samples: int, rng: np.random.Generator, fraction: float | None) -> np.ndarray:
    """Case of every sample: balanced over the cases, or ``fraction`` of them synthetic."""
    if fraction is None or synthetic.all() or not synthetic.any():
        return _cases_per_sample(len(synthetic), n_samples, rng)
    n_syn = int(round(n_samples * fraction))
    syn, real = np.flatnonzero(synthetic), np.flatnonzero(~synthetic)
    picks = [syn[_cases_per_sample(len(syn), n_syn, rng)], real[_cases_per_sample(len(real), n_samples - n_syn, rng)]]
    return np.sort(np.concatenate(picks))


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
        with _GUARD.call():
            rng = np.random.default_rng([seed, epoch] if training else [seed, 2**31 - 1])
            items = plan(rng)
            order = rng.permutation(len(items)) if training else np.arange(len(items))
            aug_seeds = rng.integers(0, 2**62, size=len(items))
        for k, idx in enumerate(order):
            if _GUARD.exiting.is_set():
                return
            with _GUARD.call():
                image, target = sample(items[idx])
            yield image, target, np.int64(aug_seeds[k])
        if not training:
            return
        epoch += 1


def _synthetic_patch(labels: np.ndarray, seed: int) -> np.ndarray:
    """A new synthetic image of a label patch, standardised like a real one."""
    from ..intensity import robust_standardise
    from .synth import synthesise

    image = synthesise(labels.astype(np.uint8), np.random.default_rng(seed))
    return robust_standardise(image, np.ones(image.shape, dtype=bool))  # a constant patch becomes zeros


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
) -> Iterator[Sample]:
    """The raw (unaugmented) 3D patch stream behind :func:`patch_dataset`.

    Samples are spread evenly over the cases, or, with ``synthetic_fraction``, that fraction
    over the synthetic cases and the rest over the real ones.

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
    volumes = _Volumes(cases)
    n_samples = patches_per_epoch if (training and patches_per_epoch) else patches_per_case * len(cases)
    synthetic = np.array([c.synthetic for c in cases], dtype=bool)

    def plan(rng: np.random.Generator) -> list[tuple]:
        items: list[tuple] = []
        owner = _owners(synthetic, n_samples, rng, synthetic_fraction)
        for i in np.unique(owner):
            n = int(np.count_nonzero(owner == i))
            mask = volumes.pair(int(i))[1]
            centres = sample_patch_centres(mask, n, size, cord_fraction, rng, volumes.cord_index(int(i)))
            items.extend((int(i), c, int(s)) for c, s in zip(centres, rng.integers(0, 2**62, size=len(centres))))
        return items

    def sample(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        image, mask = (extract_patch(v, item[1], size).astype(np.float32, copy=False) for v in volumes.pair(item[0]))
        if cases[item[0]].synthetic:
            image = _synthetic_patch(image, item[2])
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
    """The raw 2D localiser stream behind :func:`heatmap_slice_dataset`.

    Every sample is an axial slice chosen uniformly in a whole volume (slices without cord, for
    instance below the conus, included: their target is empty) cut to a ``patch_size`` window
    that contains the cord point with probability ``cord_probability``
    (:func:`~lumbo_bids.model.patches.sample_window_centre_2d`); the target is a Gaussian of
    peak 1 and ``sigma`` voxels around the centre of mass of the slice's mask.
    """
    size = tuple(int(s) for s in patch_size)
    if len(size) != 2 or not cases:
        raise ValueError(f"need a 2D patch size and at least one case (got {size}, {len(cases)} cases)")
    volumes = _Volumes(cases)
    n_samples = slices_per_epoch if (training and slices_per_epoch) else slices_per_case * len(cases)

    def plan(rng: np.random.Generator) -> list[tuple]:
        items: list[tuple] = []
        for i in _cases_per_sample(len(cases), n_samples, rng):
            shape = volumes.pair(int(i))[0].shape
            z = int(rng.integers(shape[2]))
            xy = volumes.centerline(int(i))[z]
            centre = sample_window_centre_2d(shape[:2], size, xy, cord_probability, rng)
            items.append((int(i), int(centre[0]), int(centre[1]), z))
        return items

    def sample(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        i, cx, cy, z = item
        window = extract_patch(volumes.pair(i)[0], (cx, cy, z), (*size, 1))[..., 0].astype(np.float32)
        return window, gaussian_heatmap_2d(size, volumes.centerline(i)[z] - patch_bounds((cx, cy), size)[0], sigma)

    return _stream(plan, sample, seed, training, start_epoch)


def _to_dataset(
    stream: Callable[[], Iterator[Sample]], n_samples: int, shape: tuple[int, ...], batch_size: int,
    augment: AugmentConfig | None, binary: bool, training: bool,
):  # fmt: skip  # -> tf.data.Dataset (tensorflow imported lazily)
    """Batched, prefetched dataset of ``stream`` (augmented in a parallel, order-keeping map)."""
    import tensorflow as tf

    if augment is not None and not training:
        raise ValueError("validation streams (training=False) are never augmented: pass augment=None")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = tf.TensorSpec(shape, tf.float32)
    ds = tf.data.Dataset.from_generator(stream, output_signature=(spec, spec, tf.TensorSpec((), tf.int64)))
    # a known length lets Keras end validation passes without an "ran out of data" warning
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if training else n_samples))

    if augment is not None:

        def _augment(image: np.ndarray, target: np.ndarray, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
            if _GUARD.exiting.is_set():
                return image, target
            with _GUARD.call():
                img, tgt = augment_pair(image, target, np.random.default_rng(int(seed)), augment, binary=binary)
            return img, tgt.astype(np.float32, copy=False)

        def _map(image, target, seed):
            return tf.numpy_function(_augment, [image, target, seed], [tf.float32, tf.float32], stateful=False)

        ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda image, target, seed: (image, target))

    def _shape(image, target):
        return tf.ensure_shape(image[..., None], (*shape, 1)), tf.ensure_shape(target[..., None], (*shape, 1))

    ds = ds.map(_shape).batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def patch_dataset(
    cases: Sequence[TrainingCase],
    patch_size: Sequence[int] = (48, 48, 48),
    batch_size: int = 8,
    patches_per_epoch: int | None = None,
    patches_per_case: int = 8,
    cord_fraction: float = 0.7,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    training: bool = True,
    start_epoch: int = 0,
    synthetic_fraction: float | None = None,
):  # -> tf.data.Dataset
    """Batches of 3D training (or validation) patches, streamed from the cases' ``.npy`` files.

    Parameters
    ----------
    cases : sequence of TrainingCase
        Cropped, standardised volumes and their masks.
    patch_size : sequence of int
        ``(sx, sy, sz)``.
    batch_size : int
        Patches per batch.
    patches_per_epoch : int, optional
        Training: patches per epoch (use ``steps_per_epoch * batch_size`` so that the stream's
        epochs match Keras'); default ``patches_per_case * len(cases)``.
    patches_per_case : int
        Validation (or training default): patches per case and pass.
    cord_fraction : float
        Fraction of patches centred on a cord voxel (the others uniform in the volume).
    augment : AugmentConfig, optional
        Applied on the fly to training patches; None for none.
    seed : int
        The stream is a function of ``seed`` (and the epoch, in training) only.
    training : bool
        True: infinite, reshuffled and resampled every epoch (``rng([seed, epoch])``),
        augmented, batches of exactly ``batch_size``. False: one fixed pass over
        ``patches_per_case`` patches of each case, no augmentation.
    start_epoch : int
        First epoch of the stream (a resumed run continues its sequence).
    synthetic_fraction : float, optional
        Share of the patches drawn from synthetic cases (default: even over all cases).

    Returns
    -------
    tf.data.Dataset
        ``(images, masks)``, both ``(B, sx, sy, sz, 1)`` float32 (masks 0/1).
    """
    size = tuple(int(s) for s in patch_size)
    cases = list(cases)
    args = (cases, size, patches_per_epoch, patches_per_case, cord_fraction, seed, training, start_epoch, synthetic_fraction)
    iter_patches(*args)  # validates the arguments now rather than at the first batch
    n_val = patches_per_case * len(cases)
    return _to_dataset(lambda: iter_patches(*args), n_val, size, batch_size, augment, binary=True, training=training)


def heatmap_slice_dataset(
    cases: Sequence[TrainingCase],
    patch_size: Sequence[int] = (96, 96),
    batch_size: int = 16,
    slices_per_epoch: int | None = None,
    slices_per_case: int = 16,
    sigma: float = 3.0,
    cord_probability: float = 0.8,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    training: bool = True,
    start_epoch: int = 0,
):  # -> tf.data.Dataset
    """Batches of 2D localiser windows with their target heat-maps (see :func:`iter_heatmap_slices`).

    Parameters
    ----------
    cases : sequence of TrainingCase
        Whole (uncropped) RPI volumes, normalised as the localiser expects
        (:func:`lumbo_bids.model.localise.localiser_input`), with their cord masks.
    patch_size : sequence of int
        ``(sx, sy)`` of the windows (default 96 x 96).
    batch_size : int
        Windows per batch.
    slices_per_epoch : int, optional
        Training: windows per epoch; default ``slices_per_case * len(cases)``.
    slices_per_case : int
        Validation (or training default): windows per case and pass.
    sigma : float
        Heat-map Gaussian sigma, voxels.
    cord_probability : float
        Probability that a window is placed to contain the slice's cord point.
    augment : AugmentConfig, optional
        Training augmentation (the heat-map is resampled, not thresholded).
    seed, training, start_epoch
        As in :func:`patch_dataset`.

    Returns
    -------
    tf.data.Dataset
        ``(images, heatmaps)``, both ``(B, sx, sy, 1)`` float32.
    """
    size = tuple(int(s) for s in patch_size)
    cases = list(cases)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    args = (cases, size, slices_per_epoch, slices_per_case, sigma, cord_probability, seed, training, start_epoch)
    iter_heatmap_slices(*args)  # validates the arguments now rather than at the first batch
    n_val, stream = slices_per_case * len(cases), lambda: iter_heatmap_slices(*args)
    return _to_dataset(stream, n_val, size, batch_size, augment, binary=False, training=training)
