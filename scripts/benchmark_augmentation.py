#!/usr/bin/env python3
"""Augmentation throughput: our domain-randomised augmentation against batchgenerators.

Issue 16 asked to measure ``batchgenerators`` (nnU-Net's numpy augmentation) inside the tf.data
stream before adopting it. This script times, on 48^3 patches of synthetic lumbar images
(:mod:`lumbo_bids.training.synth`), per patch and through ``tf.data`` (batches of 4, prefetch):

* ``lumbo_bids``: :func:`lumbo_bids.training.augment.augment_pair` with the shipped recipe's settings
  (flip, rotation/scaling, elastic, intensity, and the domain randomisation: LUT, inversion,
  thick slices, ringing, ghosting, bias, Rician noise, gamma);
* ``batchgenerators``: nnU-Net's default 3D chain (spatial with elastic/rotation/scale, noise,
  blur, brightness, contrast, low-resolution simulation, gamma with inversion, mirror), order-1
  interpolation like ours.

batchgenerators is not a dependency (it pulls scikit-image, scikit-learn, unittest2, future);
install it aside to run this, e.g.::

    .venv/bin/pip install --target /tmp/bgpkgs --no-deps batchgenerators future scikit-image \\
        imageio lazy-loader tifffile scikit-learn joblib threadpoolctl unittest2 traceback2 linecache2
    PYTHONPATH=/tmp/bgpkgs .venv/bin/python scripts/benchmark_augmentation.py --patches 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lumbo_bids  # noqa: E402, F401  (first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads)

PATCH = (48, 48, 48)


def source_patches(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, cord mask) 48^3 patches of synthetic lumbar images."""
    from lumbo_bids.training.synth import CORD, lumbar_phantom, synthesise

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        labels = lumbar_phantom((64, 64, 96), rng, 0.5)
        image = synthesise(labels, rng)
        z = rng.integers(0, labels.shape[2] - PATCH[2] + 1)
        box = (slice(8, 56), slice(8, 56), slice(z, z + PATCH[2]))
        out.append((image[box].astype(np.float32), (labels[box] == CORD).astype(np.uint8)))
    return out


def ours(seed: int):
    from lumbo_bids.training.augment import AugmentConfig, augment_pair

    cfg = AugmentConfig.domain_randomised(1.0, 1.0)
    rng = np.random.default_rng(seed)
    return lambda image, mask: augment_pair(image, mask, rng, cfg)


def batchgenerators_chain(seed: int):
    """nnU-Net's default 3D training transforms (batchgenerators), one sample at a time."""
    from batchgenerators.transforms.abstract_transforms import Compose
    from batchgenerators.transforms.color_transforms import (
        BrightnessMultiplicativeTransform,
        ContrastAugmentationTransform,
        GammaTransform,
    )
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    np.random.seed(seed)  # batchgenerators draws from numpy's global generator
    angle = np.deg2rad(12)
    chain = Compose([
        SpatialTransform(
            PATCH, patch_center_dist_from_border=None, do_elastic_deform=True, alpha=(0.0, 200.0), sigma=(9.0, 13.0),
            do_rotation=True, angle_x=(-angle, angle), angle_y=(-angle, angle), angle_z=(-angle, angle),
            do_scale=True, scale=(0.85, 1.25), border_mode_data="constant", order_data=1, order_seg=0,
            random_crop=False, p_el_per_sample=0.2, p_scale_per_sample=0.2, p_rot_per_sample=0.2,
        ),
        GaussianNoiseTransform(p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(p_per_sample=0.15),
        SimulateLowResolutionTransform(zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5, order_downsample=0,
                                       order_upsample=3, p_per_sample=0.25),
        GammaTransform((0.7, 1.5), True, True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), False, True, retain_stats=True, p_per_sample=0.3),
        MirrorTransform((0, 1, 2)),
    ])  # fmt: skip

    def apply(image, mask):
        out = chain(data=image[None, None].copy(), seg=mask[None, None].astype(np.float32))
        return out["data"][0, 0].astype(np.float32), out["seg"][0, 0].astype(np.uint8)

    return apply


def per_patch(augment, patches) -> float:
    started = time.perf_counter()
    for image, mask in patches:
        augment(image, mask)
    return (time.perf_counter() - started) / len(patches)


def through_tf_data(augment, patches, batch_size: int = 4) -> float:
    """Patches per second out of ``tf.data`` (generator -> batch -> prefetch), as training reads them."""
    import tensorflow as tf

    def generate():
        for image, mask in patches:
            yield augment(image, mask)

    spec = (tf.TensorSpec(PATCH, tf.float32), tf.TensorSpec(PATCH, tf.uint8))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec).batch(batch_size).prefetch(2)
    started = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in dataset)
    return count / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    patches = source_patches(args.patches, args.seed)
    chains = {"lumbo_bids": ours}
    try:
        import batchgenerators  # noqa: F401

        chains["batchgenerators"] = batchgenerators_chain
    except ImportError:
        print("batchgenerators is not installed: only lumbo_bids is measured (see the docstring)")
    print(f"{'augmentation':<18}{'ms/patch':>10}{'tf.data patches/s':>20}   ({args.patches} patches of {PATCH})")
    for name, make in chains.items():
        ms = 1000 * per_patch(make(args.seed), patches)
        rate = through_tf_data(make(args.seed + 1), patches)
        print(f"{name:<18}{ms:>10.1f}{rate:>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
