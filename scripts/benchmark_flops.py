#!/usr/bin/env python3
"""How far segmentation runs from this CPU's limit: network FLOPs against measured matmul peak.

For the shipped segmentation model and each example image (cropped stack as the participant
level makes it, from the manual mask's centerline or the localiser):

* FLOPs of one sliding window (the plan's inference window), counted layer by layer from the Keras graph (convolutions and
  transposed convolutions: 2 x kernel volume x input channels x output channels per output
  voxel; batch norm, activations and pooling are left out, a lower bound), times the number
  of sliding-window tiles of the stack;
* the measured time of the sliding-window prediction (:meth:`Predictor.probability`);
* the machine's peak: float32 matmul GFLOP/s measured with numpy and with TensorFlow
  (2048^2, best of 5) at the same thread count.

Achieved GFLOP/s / peak GFLOP/s says how much of the CPU the 3D convolutions use.

Usage: .venv/bin/python scripts/benchmark_flops.py [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lumbo_bids  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads)


def conv_flops(model, patch) -> float:
    """Multiply-adds x 2 of every (transposed) convolution of ``model`` on one ``patch`` (of every
    member, for an ensemble)."""
    import keras

    from lumbo_bids.model.network import members_of

    nets = members_of(model)
    if nets != [model]:
        return sum(conv_flops(net, patch) for net in nets)
    probe = keras.Model(model.inputs, [layer.output for layer in model.layers if _is_conv(layer)])
    shapes = [tuple(t.shape) for t in probe.compute_output_spec(keras.KerasTensor((1, *patch, 1)))]
    total = 0.0
    for layer, shape in zip((la for la in model.layers if _is_conv(la)), shapes):
        kernel = layer.kernel.shape  # (*k, in, out) for Conv; (*k, out, in) for ConvTranspose
        k = math.prod(kernel[:-2])
        out_voxels = math.prod(shape[1:-1])
        if type(layer).__name__.endswith("Transpose"):
            in_voxels = math.prod(s // st for s, st in zip(shape[1:-1], layer.strides))
            total += 2 * k * kernel[-1] * kernel[-2] * in_voxels
        else:
            total += 2 * k * kernel[-2] * kernel[-1] * out_voxels
    return total


def _is_conv(layer) -> bool:
    return type(layer).__name__ in ("Conv3D", "Conv3DTranspose", "Conv2D", "Conv2DTranspose")


def matmul_peak(threads: int) -> tuple[float, float]:
    """Best-of-5 float32 GFLOP/s of a 2048^2 matmul with numpy and with TensorFlow."""
    import numpy as np
    import tensorflow as tf

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flops = 2 * n**3

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return flops / min(times) / 1e9

    ta = tf.constant(a)
    return best(lambda: a @ a), best(lambda: tf.linalg.matmul(ta, ta).numpy())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=REPO / "examples" / "ds-spine-mini")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))

    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.inference import tile_starts
    from lumbo_bids.model.predictor import Predictor
    from lumbo_bids.model.selection import SHIPPED_LOCALISER, SHIPPED_SEGMENTATION
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.utils.bids import find_manual_mask
    from lumbo_bids.utils.images import read_volume

    artifact = load_artifact(SHIPPED_SEGMENTATION)
    predictor = Predictor.from_artifact(artifact)
    patch = artifact.plan.inference_window  # the sliding window the participant level tiles with
    per_patch = conv_flops(predictor.model, patch)
    np_peak, tf_peak = matmul_peak(args.threads)
    print(f"threads {args.threads}; matmul peak float32: numpy {np_peak:.1f} GFLOP/s, TensorFlow {tf_peak:.1f} GFLOP/s")
    print(f"network: {per_patch / 1e9:.2f} GFLOP per {patch} patch (convolutions only)")
    print(f"{'image':<28}{'stack':>16}{'tiles':>7}{'GFLOP':>8}{'seconds':>9}{'GFLOP/s':>9}{'% of TF peak':>14}")
    preprocessor = Preprocessor(artifact.plan.resolution, artifact.plan.crop_size, SHIPPED_LOCALISER)
    for image in sorted(args.dataset.glob("sub-*/anat/*.nii.gz")):
        data, affine, _ = read_volume(image)
        mask_path = find_manual_mask(image, args.dataset, args.dataset / "derivatives" / "labels")
        mask = read_volume(mask_path)[0] if mask_path else None
        stack = predictor.standardise(preprocessor.run_case(data, affine, mask).stack)
        padded = [max(s, p) for s, p in zip(stack.shape, patch)]
        tiles = math.prod(len(tile_starts(s, p, artifact.plan.overlap)) for s, p in zip(padded, patch))
        predictor.probability(stack[:, :, : patch[2]] if stack.shape[2] >= patch[2] else stack)  # warm-up (tracing)
        t0 = time.perf_counter()
        predictor.probability(stack)
        seconds = time.perf_counter() - t0
        gflop = tiles * per_patch / 1e9
        rate = gflop / seconds
        name = image.name.split(".nii")[0]
        print(f"{name:<28}{str(stack.shape):>16}{tiles:>7}{gflop:>8.1f}{seconds:>9.2f}{rate:>9.1f}{100 * rate / tf_peak:>13.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
