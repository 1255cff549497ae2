#!/usr/bin/env python3
"""Fine-tuning throughput on this machine's GPU (or CPU), on any Keras 3 backend, without the BIDS stack.

The group level's fine-tuning of the shipped model (:func:`lumbo_bids.training.finetune.fine_tune`,
the group recipe: batches of 4 patches of 48^3, augmentation on, the model's own intensity plan)
on the bundled example data's masked images, for ``--epochs`` epochs of ``--steps`` batches, with
a subject-wise validation split. The images are preprocessed here as the participant level does
(:class:`lumbo_bids.preprocess.Preprocessor`: RPI, 0.5 mm, crop around the mask's centerline);
only numpy, scipy, nibabel, keras and the backend are needed (no pybids, no Nipype, no
TensorFlow with ``KERAS_BACKEND=jax``), so it runs on a GPU machine with carried wheels
(``scripts/gpu_check.sh``).

Prints one JSON line: backend, device, patches/s (training steps after the first epoch, which
compiles), the peak GPU memory, the validation Dice before and after, and the seconds taken.

Usage::

    KERAS_BACKEND=jax python3 scripts/gpu_check.py --steps 50 --epochs 3 [--subjects sctTesting unf01]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lumbo_bids  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads)

# isort: split
import keras  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402


def masked_images(bids: Path, subjects: list[str] | None) -> list[tuple[str, str, Path, Path]]:
    """``(subject, name, image, mask)`` of each image with a manual mask in ``derivatives/labels``."""
    found = []
    for mask in sorted((bids / "derivatives" / "labels").glob("sub-*/anat/*.nii.gz")):
        name = mask.name.split("_label-")[0].split("_seg")[0]
        subject = name.split("_")[0].removeprefix("sub-")
        image = bids / f"sub-{subject}" / "anat" / f"{name}.nii.gz"
        if image.is_file() and (not subjects or subject in subjects):
            found.append((subject, name, image, mask))
    return found


def prepare(images, out: Path) -> list:
    """The participant level's preprocessing of each image (centerline from its mask) as RawCases."""
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.training.finetune import RawCase

    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for subject, name, image_path, mask_path in images:
        image, mask = nib.load(image_path), nib.load(mask_path)
        case = Preprocessor().run_case(np.asanyarray(image.dataobj), image.affine, np.asanyarray(mask.dataobj))
        np.save(out / f"{name}_stack.npy", case.stack)
        np.save(out / f"{name}_mask.npy", case.mask_stack)
        contrast = name.split("_")[-1]
        cases.append(RawCase(subject, name, contrast, out / f"{name}_stack.npy", out / f"{name}_mask.npy"))
    return cases


class StepTimer(keras.callbacks.Callback):
    """Seconds spent in training batches per epoch (validation left out)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self._last - self._start)


def peak_gpu_memory_mib() -> float | None:
    """Peak memory the backend took on the first GPU (MiB), None on CPU or when it does not say."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            stats = device.memory_stats() if device.platform == "gpu" else None
            return round(stats["peak_bytes_in_use"] / 2**20, 1) if stats else None
        if backend == "torch":
            import torch

            return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
        if backend == "tensorflow":
            import tensorflow as tf

            return (
                round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
                if tf.config.list_physical_devices("GPU")
                else None
            )
    except (RuntimeError, ValueError, KeyError):
        return None
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--steps", type=int, default=50, help="training batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first compiles: not timed)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--subjects", nargs="+", help="only these subjects (default: every one with a manual mask)")
    parser.add_argument("--validation-subjects", nargs="+", default=["sctTesting"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first one compiles and is not timed)")

    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.selection import SHIPPED_SEGMENTATION
    from lumbo_bids.training.devices import select_strategy
    from lumbo_bids.training.finetune import evaluate_cases, fine_tune
    from lumbo_bids.training.trainer import TrainConfig

    started = time.perf_counter()
    images = masked_images(args.bids, args.subjects)
    if not images:
        parser.error(f"no image with a manual mask in {args.bids}")
    _, device = select_strategy()
    init = load_artifact(SHIPPED_SEGMENTATION)
    plan = init.plan
    with tempfile.TemporaryDirectory(prefix="lumbo_gpu_check_") as tmp:
        cases = prepare(images, Path(tmp) / "raw")
        val = [c for c in cases if c.subject in args.validation_subjects]
        train = [c for c in cases if c.subject not in args.validation_subjects]
        if not val or not train:
            parser.error("need images of the validation subjects and of others")
        preprocessing = time.perf_counter() - started
        intensity = dict(plan.intensity)
        before = evaluate_cases(init.build_model(), val, plan)
        cfg = TrainConfig(
            epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size, learning_rate=1e-4, loss="dice",
            early_stopping_patience=0, seed=args.seed, patch_size=tuple(plan.patch_size),
        )  # fmt: skip
        timer = StepTimer()
        tuned = fine_tune(
            init.build_model, train, val, cfg, Path(tmp) / "data", Path(tmp) / "run", intensity=intensity,
            plan=plan, progress=False, callbacks=[timer],
        )  # fmt: skip
    timed = timer.seconds[1:]
    result = {
        "backend": keras.backend.backend(),
        "device": device,
        "images": {"train": [c.name for c in train], "validation": [c.name for c in val]},
        "steps": args.steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "patches_per_s": round(args.steps * args.batch_size * len(timed) / sum(timed), 2),
        "first_epoch_s": round(timer.seconds[0], 1),
        "peak_gpu_memory_mib": peak_gpu_memory_mib(),
        "validation_dice_before": {k: round(v, 4) for k, v in before.items()},
        "validation_dice_after": {k: round(v, 4) for k, v in tuned.validation_dice.items()},
        "preprocessing_s": round(preprocessing, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
