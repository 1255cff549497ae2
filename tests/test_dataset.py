"""Streams of training patches (lumbo_bids.training.dataset): tf.data and the backend-neutral PyDataset loader."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from lumbo_bids.training.augment import AugmentConfig
from lumbo_bids.training.cases import TrainingCase
from lumbo_bids.training.dataset import BatchStream, heatmap_slice_dataset, patch_dataset
from lumbo_bids.training.streams import iter_heatmap_slices, iter_patches

PATCH = (16, 16, 16)
#: the loaders this backend has (tf.data only with TensorFlow)
LOADERS = ["tf.data", "python"] if keras.backend.backend() == "tensorflow" else ["python"]


def write_tube_case(folder: Path, name: str, shape=(32, 32, 40), seed: int = 0, radius: float = 3.0) -> TrainingCase:
    """A bright, gently curving tube (the mask) in noise, saved as .npy."""
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        cx = shape[0] / 2 + 3 * np.sin(z / 9 + seed)
        mask[:, :, z] = (xx - cx) ** 2 + (yy - shape[1] / 2) ** 2 <= radius**2
    image = (mask * 3.0 + rng.normal(0, 0.5, shape)).astype(np.float32)
    np.save(folder / f"{name}_image.npy", image)
    np.save(folder / f"{name}_mask.npy", mask)
    return TrainingCase(f"sub-{seed:02d}", name, folder / f"{name}_image.npy", folder / f"{name}_mask.npy")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[TrainingCase]:
    folder = tmp_path_factory.mktemp("cases")
    return [write_tube_case(folder, f"case{i}", seed=i) for i in range(4)]


def _batches(ds, n: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` batches (all of a finite stream) as numpy arrays."""
    return [(np.asarray(x), np.asarray(y)) for x, y in itertools.islice(iter(ds), n)]


def _n_batches(ds) -> int | None:
    """Batches per pass; None for an infinite stream."""
    if isinstance(ds, BatchStream):
        return ds.num_batches
    import tensorflow as tf

    return None if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY) else int(ds.cardinality())


@pytest.mark.parametrize("loader", LOADERS)
def test_batches_have_the_right_shape_and_content(cases, loader):
    ds = patch_dataset(cases, PATCH, batch_size=5, patches_per_epoch=20, cord_fraction=1.0, seed=0, loader=loader)
    ((x, y),) = _batches(ds, 1)
    assert x.shape == (5, *PATCH, 1) and y.shape == (5, *PATCH, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert np.all(y[:, 8, 8, 8, 0] == 1)  # cord_fraction 1: every patch centred on the cord
    assert x[y == 1].mean() > x[y == 0].mean() + 2  # image and mask aligned (bright tube)


def test_cord_fraction_zero_gives_mostly_background_centres(cases):
    ds = patch_dataset(cases, PATCH, batch_size=10, patches_per_epoch=100, cord_fraction=0.0, seed=0)
    centres = np.concatenate([y[:, 8, 8, 8, 0] for _, y in _batches(ds, 10)])
    assert centres.mean() < 0.3  # the tube is ~3 % of the volume


@pytest.mark.parametrize("loader", LOADERS)
def test_same_seed_same_stream_other_seed_other_stream(cases, loader):
    kw = {"batch_size": 4, "patches_per_epoch": 16, "augment": AugmentConfig(), "training": True, "loader": loader}
    a = _batches(patch_dataset(cases, PATCH, seed=3, **kw), 6)
    b = _batches(patch_dataset(cases, PATCH, seed=3, **kw), 6)
    c = _batches(patch_dataset(cases, PATCH, seed=4, **kw), 6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize("loader", LOADERS)
def test_epochs_differ_and_start_epoch_continues_the_sequence(cases, loader):
    kw = {"batch_size": 4, "patches_per_epoch": 8, "augment": AugmentConfig(), "seed": 1, "loader": loader}
    stream = _batches(patch_dataset(cases, PATCH, **kw), 6)  # epochs 0, 1, 2 (2 batches each)
    assert not np.array_equal(stream[0][0], stream[2][0])
    assert not np.array_equal(stream[1][0], stream[3][0])
    resumed = _batches(patch_dataset(cases, PATCH, start_epoch=2, **kw), 2)
    np.testing.assert_array_equal(resumed[0][0], stream[4][0])
    np.testing.assert_array_equal(resumed[1][1], stream[5][1])


@pytest.mark.parametrize("loader", LOADERS)
def test_validation_stream_is_finite_fixed_and_not_augmented(cases, loader):
    ds = patch_dataset(cases, PATCH, batch_size=3, patches_per_case=2, seed=0, training=False, loader=loader)
    assert _n_batches(ds) == 3  # 8 patches: batches of 3, 3, 2
    first = [x for x, _ in _batches(ds)]
    second = [x for x, _ in _batches(ds)]
    assert [b.shape[0] for b in first] == [3, 3, 2]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # no augmentation: every patch is a crop of one of the volumes (zero padded)
    raw = list(iter_patches(cases, PATCH, patches_per_case=2, seed=0, training=False))
    np.testing.assert_array_equal(np.concatenate(first)[..., 0], np.stack([r[0] for r in raw]))
    with pytest.raises(ValueError):
        patch_dataset(cases, PATCH, augment=AugmentConfig(), training=False)
    assert _n_batches(patch_dataset(cases, PATCH, seed=0, loader=loader)) is None  # training: infinite


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data needs the TensorFlow backend")
def test_both_loaders_give_the_same_batches(cases, tmp_path):
    """The PyDataset loader (JAX, PyTorch) streams exactly what tf.data streams: same samples in
    the same order, the same augmentation (each sample's own seed), whatever the threads."""

    def _same(a, b):  # TensorFlow's threads flush denormals (< 1.2e-38) to zero; nothing else differs
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-37)

    kw = {"batch_size": 3, "patches_per_epoch": 9, "augment": AugmentConfig(), "seed": 5, "start_epoch": 1}
    tf_batches = _batches(patch_dataset(cases, PATCH, loader="tf.data", **kw), 7)  # across 3 epochs
    stream = patch_dataset(cases, PATCH, loader="python", **kw)
    py_batches = _batches(stream, 7)
    stream.close()
    for (xa, ya), (xb, yb) in zip(tf_batches, py_batches, strict=True):
        _same(xa, xb), _same(ya, yb)
    case = write_localiser_case(tmp_path, "whole")
    kw = {"batch_size": 4, "slices_per_epoch": 8, "augment": AugmentConfig(), "seed": 2}
    a = _batches(heatmap_slice_dataset([case], (32, 32), loader="tf.data", **kw), 3)
    b = _batches(heatmap_slice_dataset([case], (32, 32), loader="python", **kw), 3)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        _same(xa, xb), _same(ya, yb)


def test_python_loader_reports_stream_errors_and_rejects_unknown_loaders(cases):
    """An error in the producer thread reaches fit's thread; a wrong loader name is refused."""

    def broken():
        yield from itertools.islice(iter_patches(cases, PATCH, patches_per_epoch=4, seed=0), 5)
        raise OSError("case file vanished")

    stream = BatchStream(broken, 5, 2, AugmentConfig(), True, True)
    assert [stream[i][0].shape for i in range(2)] == [(2, *PATCH, 1)] * 2
    with pytest.raises(OSError, match="case file vanished"):
        stream[2]  # the error came inside the third batch
    ended = BatchStream(lambda: iter_patches(cases, PATCH, patches_per_case=1, seed=0, training=False), 4, 8, None, True, True)
    with pytest.raises(RuntimeError, match="training stream ended"):
        ended[0]
    with pytest.raises(ValueError, match="loader must be one of"):
        patch_dataset(cases, PATCH, loader="dali")
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="needs the TensorFlow backend"):
            patch_dataset(cases, PATCH, loader="tf.data")


def test_every_case_is_used_in_balanced_proportions(tmp_path):
    cases = [write_tube_case(tmp_path, f"c{i}", shape=(16, 16, 16), seed=i) for i in range(3)]
    for i, c in enumerate(cases):  # tag every case with a constant image value
        np.save(c.image, np.full((16, 16, 16), float(i + 1), np.float32))
    raw = list(itertools.islice(iter_patches(cases, (4, 4, 4), patches_per_epoch=9, cord_fraction=0.5, seed=0), 9))
    tags = [int(r[0][2, 2, 2]) for r in raw]
    assert sorted(tags) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert tags != sorted(tags)  # shuffled across cases


def test_streaming_memory_stays_bounded(tmp_path):
    import tensorflow  # noqa: F401 - imported before tracing: its import alone allocates ~160 MiB

    shape = (32, 32, 1024)  # 4 MiB image + 1 MiB mask per case
    cases = [write_tube_case(tmp_path, f"big{i}", shape=shape, seed=i) for i in range(20)]
    case_bytes = 5 * np.prod(shape)
    gc.collect()
    tracemalloc.start()
    try:
        np.asarray(np.load(cases[0].image))  # control: tracemalloc does see numpy buffers
        control = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        shapes = [image.shape for image, _, _ in iter_patches(cases, PATCH, patches_per_case=3, seed=0, training=False)]
        ds = patch_dataset(cases, PATCH, batch_size=4, patches_per_epoch=60, augment=AugmentConfig(), seed=0)
        for x, _ in itertools.islice(iter(ds), 15):
            assert x.shape[0] == 4
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert control >= 4 * np.prod(shape)
    assert shapes == [PATCH] * 60
    assert peak < 0.5 * case_bytes, f"peak {peak / 2**20:.1f} MiB while streaming 20 cases of {case_bytes / 2**20:.0f} MiB"


def write_localiser_case(folder: Path, name: str, shape=(120, 100, 30), cord_slices: int = 20) -> TrainingCase:
    """A whole volume with a bright cord at (70, 40) in its first ``cord_slices`` slices only."""
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.zeros(shape, np.uint8)
    mask[:, :, :cord_slices] = (((xx - 70) ** 2 + (yy - 40) ** 2) <= 9)[:, :, None]
    image = (mask * 3.0 + np.random.default_rng(0).normal(0, 0.3, shape)).astype(np.float32)
    np.save(folder / f"{name}_image.npy", image)
    np.save(folder / f"{name}_mask.npy", mask)
    return TrainingCase("sub-01", name, folder / f"{name}_image.npy", folder / f"{name}_mask.npy")


def test_heatmap_windows_peak_on_the_cord(tmp_path):
    case = write_localiser_case(tmp_path, "whole")
    ds = heatmap_slice_dataset([case], (48, 48), batch_size=8, slices_per_epoch=32, sigma=2.0, cord_probability=1.0, seed=0)
    with_cord = empty = 0
    for x, y in _batches(ds, 4):
        assert x.shape == (8, 48, 48, 1) and y.shape == (8, 48, 48, 1)
        for image, heat in zip(x[..., 0], y[..., 0]):
            if heat.max() == 0:  # a slice below the cord: nothing bright either
                empty += 1
                assert image.max() < 2.5
                continue
            with_cord += 1
            assert heat.max() > 0.95
            peak = np.array(np.unravel_index(heat.argmax(), heat.shape))
            bright = np.argwhere(image > 1.5).mean(axis=0)  # the tube in the image window
            assert np.abs(peak - bright).max() <= 1.0
            assert 4 <= peak.min() and peak.max() <= 43  # inside, away from the edges
    assert with_cord > 10 and empty > 2  # 1/3 of the slices have no cord


def test_heatmap_cord_probability_and_augmentation(tmp_path):
    case = write_localiser_case(tmp_path, "whole", shape=(200, 200, 10), cord_slices=10)
    stream = iter_heatmap_slices([case], (32, 32), slices_per_epoch=200, cord_probability=0.0, seed=0)
    raw = list(itertools.islice(stream, 200))
    assert np.mean([h.max() > 0.5 for _, h, _ in raw]) < 0.15
    ds = heatmap_slice_dataset(
        [case], (32, 32), batch_size=8, slices_per_epoch=16, cord_probability=1.0, augment=AugmentConfig(), seed=0
    )
    heats = np.concatenate([y for _, y in _batches(ds, 2)])
    assert 0.0 <= heats.min() and heats.max() <= 1.0
    assert len(np.unique(heats)) > 50  # soft targets, not thresholded
    assert np.all(heats.max(axis=(1, 2, 3)) > 0.5)


def test_heatmap_windows_of_a_phantom_are_new_images_and_end_at_its_conus(tmp_path):
    """A synthetic localiser case (a conus phantom's label map at 1 mm): every window is a new
    normalised image of its labels, and the target follows the cord's label only, so the slices
    below the conus tip (roots and filum) have an empty target."""
    from lumbo_bids.training import synth

    rng = np.random.default_rng(0)  # a phantom whose tip lies in view (29 mm above the bottom)
    labels = synth.conus_phantom((64, 64, 80), rng, 1.0, dorsal_roots=0.5)
    cord = labels == synth.CORD
    z_cord = np.flatnonzero(cord.any(axis=(0, 1)))
    assert 0 < z_cord.min() and (labels[:, :, : z_cord.min()] == synth.ROOTS).any()  # a tip in view, roots below
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "cord.npy", cord.astype(np.uint8))
    case = TrainingCase("phantom-00", "phantom", tmp_path / "labels.npy", tmp_path / "cord.npy", synthetic=True)
    options = dict(slices_per_epoch=60, sigma=2.0, cord_probability=1.0, seed=0)
    samples = list(itertools.islice(iter_heatmap_slices([case], (48, 48), **options), 60))
    below = above = 0
    for image, heat, _ in samples:
        assert image.dtype == np.float32 and np.isfinite(image).all()
        assert abs(float(image.mean())) < 0.2 and 0.8 < float(image.std()) < 1.2  # the localiser's z-score
        assert len(np.unique(image)) > 50  # an image (texture, blur), not the label codes
        if heat.max() == 0:
            below += 1
        else:
            above += 1
            assert heat.max() > 0.95
    assert below > 3 and above > 10
    again = list(itertools.islice(iter_heatmap_slices([case], (48, 48), **options), 2))
    assert np.array_equal(again[0][0], samples[0][0])  # reproducible from the seed
    epoch1 = list(itertools.islice(iter_heatmap_slices([case], (48, 48), **options, start_epoch=1), 1))
    assert not np.array_equal(epoch1[0][0], samples[0][0])  # and a new image in the next epoch


def test_process_exits_with_a_live_iterator(tmp_path, cases):
    """tf.data threads inside the generator at interpreter exit must not hang the process."""
    import subprocess
    import sys

    script = """
import itertools, sys
from pathlib import Path
from lumbo_bids.training.augment import AugmentConfig
from lumbo_bids.training.cases import TrainingCase
from lumbo_bids.training.dataset import patch_dataset
cases = [TrainingCase("s", c.stem, c, Path(str(c).replace("_image", "_mask"))) for c in map(Path, sys.argv[1:])]
it = iter(patch_dataset(cases, (32, 32, 32), batch_size=2, augment=AugmentConfig(), seed=0))
for _ in range(3):
    next(it)
print("iterated", flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, *[str(c.image) for c in cases]],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert "iterated" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("loader", LOADERS)
def test_a_clean_view_rides_with_the_target(cases, loader):
    """``clean_view``: the target's second channel is the patch before noise (here the only
    augmentation), the first the mask; the image is the one streamed without it."""
    noise = replace(AugmentConfig.identity(), p_noise=1.0, noise_std=0.5)
    kw = {"batch_size": 4, "patches_per_epoch": 8, "augment": noise, "seed": 2, "cord_fraction": 1.0, "loader": loader}
    ((x, y),) = _batches(patch_dataset(cases, PATCH, clean_view=True, **kw), 1)
    ((x_plain, y_plain),) = _batches(patch_dataset(cases, PATCH, **kw), 1)
    assert x.shape == (4, *PATCH, 1) and y.shape == (4, *PATCH, 2)
    np.testing.assert_array_equal(x, x_plain)
    np.testing.assert_array_equal(y[..., :1], y_plain)
    raw = [r[0] for r in itertools.islice(iter_patches(cases, PATCH, 8, cord_fraction=1.0, seed=2), 4)]
    np.testing.assert_allclose(y[..., 1], np.stack(raw), rtol=1e-6, atol=1e-37)  # the patch as it was
    assert np.abs(x[..., 0] - y[..., 1]).mean() > 0.1  # the student's patch is the noisy one
    val = patch_dataset(cases, PATCH, batch_size=4, patches_per_case=1, seed=0, training=False, clean_view=True)
    assert _batches(val, 1)[0][1].shape[-1] == 1  # never augmented: the label alone
