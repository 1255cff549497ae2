#!/usr/bin/env python3
"""Training throughput (patches/s) of the group level on this machine: CPU, or GPU(s) if any.

Measures, on the example dataset preprocessed as the group level does:
  1. the input pipeline alone (``patch_dataset`` with augmentation, by ``--loader``: tf.data, or
     the backend-neutral PyDataset loader of JAX and PyTorch),
  2. full training steps (``Model.fit`` through :func:`lumbo_bids.training.trainer.train`),
for the shipped architecture; prints a table and peak RSS.

Usage::

    .venv/bin/python scripts/benchmark_training.py [--steps 20] [--batch-size 4] [--base-filters 8] [--loader python]
    KERAS_BACKEND=jax .venv/bin/python scripts/benchmark_training.py   # another Keras backend
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lumbo_bids  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads)


def _base_model_script():
    spec = importlib.util.spec_from_file_location("train_base_model", REPO / "scripts" / "train_base_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--loader", choices=("auto", "tf.data", "python"), default="auto", help="how batches reach fit")
    args = parser.parse_args(argv)

    import itertools

    import keras

    from lumbo_bids.model.network import build_unet3d
    from lumbo_bids.model.unet_config import UNet3DConfig
    from lumbo_bids.training.augment import AugmentConfig
    from lumbo_bids.training.dataset import patch_dataset
    from lumbo_bids.training.devices import select_strategy
    from lumbo_bids.training.finetune import learn_intensity, standardise_cases
    from lumbo_bids.training.trainer import TrainConfig, train

    base = _base_model_script()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = [base.prepare_case(anat, tmp)[0] for anat in base.masked_images(args.bids)]
        cases = standardise_cases(raw, learn_intensity(raw, base.INTENSITY), tmp / "std")
        n = args.steps * args.batch_size

        ds = patch_dataset(cases, patch_size=(48, 48, 48), batch_size=args.batch_size, patches_per_epoch=n,
                           augment=AugmentConfig.domain_randomised(), seed=0, training=True, loader=args.loader)  # fmt: skip
        started = time.perf_counter()
        batches = [(np.asarray(x), np.asarray(y)) for x, y in itertools.islice(iter(ds), args.steps)]  # the stream repeats
        pipeline = sum(int(x.shape[0]) for x, _ in batches) / (time.perf_counter() - started)
        if hasattr(ds, "close"):
            ds.close()

        _, device = select_strategy()
        arch = UNet3DConfig(base_filters=args.base_filters)
        cfg = TrainConfig(epochs=2, steps_per_epoch=args.steps, batch_size=args.batch_size, early_stopping_patience=0,
                          val_patches_per_case=1, patch_size=(48, 48, 48))  # fmt: skip
        result = train(lambda: build_unet3d(arch), cases, cases[:1], cfg, tmp / "run", progress=False, loader=args.loader)
        per_epoch = result.seconds / 2  # includes graph tracing and validation
        model = result.model
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.train_on_batch(*batches[0])
        started = time.perf_counter()
        for x, y in batches:
            model.train_on_batch(x, y)
        steps_only = n / (time.perf_counter() - started)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"device: {device}; Keras {keras.__version__} on {keras.backend.backend()}, loader {args.loader}; base_filters {args.base_filters}, batch {args.batch_size}, 48^3 patches"
    )
    print(f"{'measure':<40}{'patches/s':>12}")
    print(f"{'input pipeline (augmented)':<40}{pipeline:>12.1f}")
    print(f"{'train steps only (in-memory batches)':<40}{steps_only:>12.1f}")
    print(f"{'Model.fit, incl. validation and setup':<40}{n / per_epoch:>12.1f}")
    print(f"peak RSS: {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
