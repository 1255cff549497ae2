"""Streams of training patches for ``Model.fit`` (3D segmentation, 2D localiser), on any Keras backend.

The samples come from the Python generators of :mod:`lumbo_bids.training.streams` (a plan drawn
from ``np.random.default_rng([seed, epoch])`` per epoch, patches copied out of memory-mapped
``.npy`` cases). Each sample is augmented with its own generator seeded from the plan, so the
stream is a function of ``seed`` and the epoch only, however many threads augment it.
Validation streams (``training=False``) are finite, fixed (one seed, epoch independent) and
never augmented.

Two loaders give the same batches (``loader=``):

``"tf.data"`` (default on the TensorFlow backend)
    ``Dataset.from_generator`` with augmentation in a parallel, order-keeping ``Dataset.map``.
``"python"`` (default on JAX and PyTorch; :class:`BatchStream`)
    A :class:`keras.utils.PyDataset`: one producer thread reads the stream in order, a pool of
    threads augments each batch (order kept), and up to ``prefetch`` batches wait for ``fit``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.pool import ThreadPool

import keras
import numpy as np

from .augment import AugmentConfig, augment_pair
from .cases import TrainingCase
from .exit_guard import GUARD
from .streams import Sample, iter_heatmap_slices, iter_patches

LOADERS = ("auto", "tf.data", "python")


def _augment_sample(
    sample: Sample, augment: AugmentConfig | None, binary: bool, clean_view: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One sample's ``(image, target)`` as float32, augmented with its own seeded generator
    (``clean_view``: the target with the clean view as a last axis, :func:`augment_pair`)."""
    image, target, seed = sample
    if augment is not None:
        rng = np.random.default_rng(int(seed))
        image, target = augment_pair(image, target, rng, augment, binary=binary, clean_view=clean_view)
    return np.asarray(image, np.float32), np.asarray(target, np.float32)


def _channels(array: np.ndarray, shape_rank: int) -> np.ndarray:
    """``array`` with a channel axis: added when it has none (a target with a clean view has two)."""
    return array if array.ndim == shape_rank + 1 else array[..., None]


class BatchStream(keras.utils.PyDataset):
    """Batches ``(images, targets)`` of a sample stream, each ``(B, *shape, 1)`` float32, for any backend.

    Training streams are infinite (``num_batches`` None, batches of exactly ``batch_size``, read
    in order whatever index Keras asks for); validation streams are finite, read once and kept
    (the last batch may be smaller). :meth:`close` stops the producer thread (``train`` calls it
    after ``fit``).
    """

    def __init__(
        self, stream: Callable[[], Iterator[Sample]], n_samples: int, batch_size: int, augment: AugmentConfig | None,
        binary: bool, training: bool, threads: int | None = None, prefetch: int = 4, clean_view: bool = False,
    ):  # fmt: skip
        super().__init__(workers=1, use_multiprocessing=False)  # fit reads in the calling thread: order kept
        self._stream, self._n, self._batch = stream, int(n_samples), int(batch_size)
        self._augment, self._binary, self._training = augment, binary, training
        self._clean_view = bool(clean_view)
        self._threads = max(1, threads or min(8, os.cpu_count() or 1))
        self._prefetch = max(1, int(prefetch))
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._kept: list | None = None

    @property
    def num_batches(self) -> int | None:
        return None if self._training else -(-self._n // self._batch)

    def __getitem__(self, index: int):
        if not self._training:
            if self._kept is None:
                self._kept = self._read_all()
            return self._kept[index]
        if self._queue is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _stack(self, pairs: list) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([p[0] for p in pairs])
        return images[..., None], _channels(np.stack([p[1] for p in pairs]), images.ndim)

    def _read_all(self) -> list:
        pairs = [_augment_sample(s, None, self._binary) for s in self._stream()]
        return [self._stack(pairs[i : i + self._batch]) for i in range(0, len(pairs), self._batch)]

    def _start(self) -> None:
        self._queue = queue.Queue(self._prefetch)
        threading.Thread(target=self._produce, name="lumbo_bids-batches", daemon=True).start()

    def _produce(self) -> None:
        """Read the stream in order, augment each batch in the pool, queue it (until :meth:`close`)."""
        samples = self._stream()
        work = lambda sample: _augment_sample(sample, self._augment, self._binary, self._clean_view)  # noqa: E731
        try:
            with ThreadPool(self._threads) as pool:
                while not self._stop.is_set():
                    try:
                        batch = [next(samples) for _ in range(self._batch)]
                    except StopIteration:
                        raise RuntimeError("the training stream ended (it is infinite by design)") from None
                    item = self._stack(pool.map(work, batch))
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.5)
                            break
                        except queue.Full:
                            continue
        except BaseException as error:  # handed to fit's thread, which raises it
            self._queue.put(error)

    def close(self) -> None:
        """Stop the producer thread (a finished ``fit`` asks no more batches)."""
        self._stop.set()


def _loader(loader: str) -> str:
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    if loader == "auto":
        return "tf.data" if keras.backend.backend() == "tensorflow" else "python"
    if loader == "tf.data" and keras.backend.backend() != "tensorflow":
        raise ValueError(f"loader 'tf.data' needs the TensorFlow backend (this is {keras.backend.backend()})")
    return loader


def _to_dataset(
    stream: Callable[[], Iterator[Sample]], n_samples: int, shape: tuple[int, ...], batch_size: int,
    augment: AugmentConfig | None, binary: bool, training: bool, loader: str = "auto", clean_view: bool = False,
):  # fmt: skip  # -> tf.data.Dataset or BatchStream
    """Batched, prefetched stream of ``stream`` (augmented in parallel, order kept), by ``loader``;
    ``clean_view``: augmented targets carry the clean view as a second channel (:func:`augment_pair`)."""
    if augment is not None and not training:
        raise ValueError("validation streams (training=False) are never augmented: pass augment=None")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if _loader(loader) == "python":
        return BatchStream(stream, n_samples, batch_size, augment, binary, training, clean_view=clean_view)
    import tensorflow as tf

    spec = tf.TensorSpec(shape, tf.float32)
    ds = tf.data.Dataset.from_generator(stream, output_signature=(spec, spec, tf.TensorSpec((), tf.int64)))
    # a known length lets Keras end validation passes without an "ran out of data" warning
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if training else n_samples))

    if augment is not None:

        def _augment(image: np.ndarray, target: np.ndarray, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
            if GUARD.exiting.is_set():
                return image, target
            with GUARD.call():
                return _augment_sample((image, target, seed), augment, binary, clean_view)

        def _map(image, target, seed):
            return tf.numpy_function(_augment, [image, target, seed], [tf.float32, tf.float32], stateful=False)

        ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda image, target, seed: (image, target))

    channels = 2 if clean_view and augment is not None else 1

    def _shape(image, target):
        target = tf.reshape(target, (*shape, channels))  # a clean view is already the last axis
        return tf.ensure_shape(image[..., None], (*shape, 1)), tf.ensure_shape(target, (*shape, channels))

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
    grey_matter: float = 0.0,
    end_fraction: float = 0.0,
    loader: str = "auto",
    clean_view: bool = False,
):  # -> tf.data.Dataset or BatchStream
    """Batches of 3D training (or validation) patches, streamed from the cases' ``.npy`` files.

    Parameters
    ----------
    cases : sequence of TrainingCase
        Cropped, standardised volumes and their masks.
    patch_size, batch_size : sequence of int, int
        ``(sx, sy, sz)``; patches per batch.
    patches_per_epoch : int, optional
        Training: patches per epoch (use ``steps_per_epoch * batch_size`` so that the stream's
        epochs match Keras'); default ``patches_per_case * len(cases)``.
    patches_per_case : int
        Validation (or training default): patches per case and pass.
    cord_fraction, augment : float, AugmentConfig or None
        Fraction of patches centred on a cord voxel (the others uniform in the volume); the
        augmentation applied on the fly to training patches (None: none).
    seed : int
        The stream is a function of ``seed`` (and the epoch, in training) only.
    training, start_epoch : bool, int
        True: infinite, reshuffled and resampled every epoch (``rng([seed, epoch])``),
        augmented, batches of exactly ``batch_size``. False: one fixed pass over
        ``patches_per_case`` patches of each case, no augmentation. ``start_epoch``: the
        stream's first epoch (a resumed run continues its sequence).
    synthetic_fraction : float, optional
        Share of the patches drawn from synthetic cases (default: even over all cases).
    grey_matter, end_fraction : float
        Probability that a synthetic image gets a grey-matter core of its own intensity inside
        the cord (:func:`lumbo_bids.training.synth.synthesise`); share of a synthetic case's cord
        patches centred around its cord's ends (:func:`~lumbo_bids.training.patches.sample_patch_centres`).
    loader, clean_view : {"auto", "tf.data", "python"}, bool
        ``"auto"``: ``tf.data`` on the TensorFlow backend, else :class:`BatchStream`. ``clean_view``:
        augmented masks get a clean teacher's input as a second channel (``augment_pair``).

    Returns ``(images, masks)`` batches, both ``(B, sx, sy, sz, 1)`` float32 (masks 0/1).
    """
    size, cases = tuple(int(s) for s in patch_size), list(cases)
    args = (
        cases, size, patches_per_epoch, patches_per_case, cord_fraction, seed, training, start_epoch, synthetic_fraction,
        grey_matter, end_fraction,
    )  # fmt: skip
    iter_patches(*args)  # validates the arguments now rather than at the first batch
    n_val = patches_per_case * len(cases)
    return _to_dataset(lambda: iter_patches(*args), n_val, size, batch_size, augment, True, training, loader, clean_view)


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
    loader: str = "auto",
):  # -> tf.data.Dataset or BatchStream
    """Batches of 2D localiser windows with their target heat-maps (see :func:`~lumbo_bids.training.streams.iter_heatmap_slices`).

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
    seed, training, start_epoch, loader
        As in :func:`patch_dataset`.

    Returns
    -------
    tf.data.Dataset or BatchStream
        ``(images, heatmaps)``, both ``(B, sx, sy, 1)`` float32.
    """
    size = tuple(int(s) for s in patch_size)
    cases = list(cases)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    args = (cases, size, slices_per_epoch, slices_per_case, sigma, cord_probability, seed, training, start_epoch)
    iter_heatmap_slices(*args)  # validates the arguments now rather than at the first batch
    n_val, stream = slices_per_case * len(cases), lambda: iter_heatmap_slices(*args)
    return _to_dataset(stream, n_val, size, batch_size, augment, False, training, loader)
