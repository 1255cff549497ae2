"""Segmentation losses and the Dice metric (Keras 3, backend agnostic, mixed-precision safe).

Everything is computed in float32 whatever the dtype of the model's output (a
``mixed_float16`` model may return float16 probabilities). The soft Dice is computed over the
whole batch (all voxels of all patches together, as SCT's ``dice_coef_loss``), which keeps it
defined for patches without cord. :func:`cldice_loss` (Shit et al., CVPR 2021) scores the
skeletons instead of the volumes: a thin end that the prediction misses (the conus tip, a few
mm^2 over 10-20 mm) costs by its length, not by its few voxels. :func:`slice_dice_loss` scores
every axial slice (along the patch's last spatial axis, the cord's) on its own, so a slice of the
thin conus counts as much as a slice of the enlargement, and a root marked below the tip costs a
whole slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

_EPSILON = 1e-7


def _as_float32(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


@keras.saving.register_keras_serializable(package="lumbo_bids")
def dice_loss(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """Soft Dice loss ``1 - (2 sum(t p) + s) / (sum(t) + sum(p) + s)`` over the batch.

    Parameters
    ----------
    y_true : tensor
        Binary (or soft) targets, any shape.
    y_pred : tensor
        Probabilities in [0, 1], same shape.
    smooth : float
        Additive smoothing ``s`` (> 0 keeps the loss defined, and 0, for empty targets
        predicted empty).

    Returns
    -------
    tensor
        float32 scalar in [0, 1].
    """
    t, p = _as_float32(y_true, y_pred)
    intersection = ops.sum(t * p)
    return 1.0 - (2.0 * intersection + smooth) / (ops.sum(t) + ops.sum(p) + smooth)


@keras.saving.register_keras_serializable(package="lumbo_bids")
def dice_bce_loss(y_true: Any, y_pred: Any, bce_weight: float = 1.0, smooth: float = 1.0) -> Any:
    """Soft Dice loss plus ``bce_weight`` times the mean binary cross-entropy.

    Parameters
    ----------
    y_true, y_pred : tensor
        As for :func:`dice_loss`.
    bce_weight : float
        Weight of the cross-entropy term (>= 0).
    smooth : float
        Dice smoothing.

    Returns
    -------
    tensor
        float32 scalar.
    """
    t, p = _as_float32(y_true, y_pred)
    p = ops.clip(p, _EPSILON, 1.0 - _EPSILON)
    bce = -ops.mean(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    return dice_loss(t, p, smooth) + bce_weight * bce


def _soft_erode(x: Any) -> Any:
    """Soft morphological erosion of ``(B, X, Y, Z, 1)`` maps: the minimum over 3-voxel lines along each axis."""
    lines = [(3, 1, 1), (1, 3, 1), (1, 1, 3)]
    return ops.min(ops.stack([-ops.max_pool(-x, line, strides=1, padding="same") for line in lines]), axis=0)


def _soft_dilate(x: Any) -> Any:
    return ops.max_pool(x, 3, strides=1, padding="same")


def soft_skeleton(x: Any, iterations: int = 10) -> Any:
    """Soft skeleton of ``(B, X, Y, Z, 1)`` probabilities (clDice's iterative soft thinning).

    Each iteration erodes the map once and keeps what an opening removes; ``iterations`` must reach
    the structure's radius in voxels (the cord at 0.5 mm: 6-10).
    """
    x = ops.cast(x, "float32")
    skeleton = ops.relu(x - _soft_dilate(_soft_erode(x)))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = ops.relu(x - _soft_dilate(_soft_erode(x)))
        skeleton = skeleton + ops.relu(delta - skeleton * delta)
    return skeleton


@keras.saving.register_keras_serializable(package="lumbo_bids")
def cldice_loss(y_true: Any, y_pred: Any, iterations: int = 10, smooth: float = 1.0) -> Any:
    """``1 - clDice``: the harmonic mean of the share of the predicted skeleton inside the target
    (topology precision) and of the target's skeleton inside the prediction (topology sensitivity),
    over the batch. Inputs ``(B, X, Y, Z, 1)``; float32 scalar in [0, 1]."""
    t, p = _as_float32(y_true, y_pred)
    skel_p, skel_t = soft_skeleton(p, iterations), soft_skeleton(t, iterations)
    precision = (ops.sum(skel_p * t) + smooth) / (ops.sum(skel_p) + smooth)
    sensitivity = (ops.sum(skel_t * p) + smooth) / (ops.sum(skel_t) + smooth)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)


@keras.saving.register_keras_serializable(package="lumbo_bids")
def slice_dice_loss(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """``1 -`` the mean soft Dice of the axial slices of ``(B, X, Y, Z, 1)`` maps that have cord in the
    target or the prediction (a slice's weight: the larger of its target and predicted sums, capped at 1,
    so that empty slices predicted empty do not count). float32 scalar in [0, 1].

    The volume Dice counts voxels, so missing the last 10 mm of a tapering conus (a few voxels per
    slice) costs it little; here each of those slices costs nearly 1, as does each slice of a root
    or filum marked below the tip.
    """
    t, p = _as_float32(y_true, y_pred)
    intersection = ops.sum(t * p, axis=(1, 2, 4))
    sums = ops.sum(t, axis=(1, 2, 4)), ops.sum(p, axis=(1, 2, 4))
    dice = (2.0 * intersection + smooth) / (sums[0] + sums[1] + smooth)
    weight = ops.minimum(ops.maximum(sums[0], sums[1]), 1.0)
    return ops.sum(weight * (1.0 - dice)) / (ops.sum(weight) + _EPSILON)


def get_loss(
    name: str, bce_weight: float = 1.0, smooth: float = 1.0, cldice_weight: float = 0.0, slice_dice_weight: float = 0.0
) -> Callable[[Any, Any], Any]:
    """The loss function called ``name`` (``"dice"`` or ``"dice_bce"``) with its settings bound,
    plus ``cldice_weight`` times :func:`cldice_loss` and ``slice_dice_weight`` times
    :func:`slice_dice_loss` when those are above 0.

    Returns
    -------
    callable
        ``loss(y_true, y_pred) -> scalar``, named ``name`` (Keras logs it as ``loss``).
    """
    if name == "dice":

        def loss(y_true: Any, y_pred: Any) -> Any:
            return dice_loss(y_true, y_pred, smooth)

    elif name == "dice_bce":

        def loss(y_true: Any, y_pred: Any) -> Any:
            return dice_bce_loss(y_true, y_pred, bce_weight, smooth)

    else:
        raise ValueError(f"loss must be 'dice' or 'dice_bce', got {name!r}")
    if cldice_weight > 0:
        volume = loss

        def loss(y_true: Any, y_pred: Any) -> Any:
            return volume(y_true, y_pred) + cldice_weight * cldice_loss(y_true, y_pred, smooth=smooth)

    if slice_dice_weight > 0:
        before = loss

        def loss(y_true: Any, y_pred: Any) -> Any:
            return before(y_true, y_pred) + slice_dice_weight * slice_dice_loss(y_true, y_pred, smooth)

    loss.__name__ = name
    return loss


@keras.saving.register_keras_serializable(package="lumbo_bids")
class DiceMetric(keras.metrics.Metric):
    """Hard Dice at a threshold, accumulated over every voxel of every batch of an epoch.

    ``2 |T & P| / (|T| + |P|)`` with ``T = y_true >= 0.5`` and ``P = y_pred >= threshold``;
    1.0 when both are empty. Logged as ``dice`` (``val_dice`` on validation data).

    Parameters
    ----------
    threshold : float
        Probability threshold of the prediction.
    name : str
        Metric name.
    """

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection", dtype="float32")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add a batch (``sample_weight`` is not supported and must be None)."""
        if sample_weight is not None:
            raise ValueError("DiceMetric does not support sample_weight")
        t, p = _as_float32(y_true, y_pred)
        t = ops.cast(t >= 0.5, "float32")
        p = ops.cast(p >= self.threshold, "float32")
        self.intersection.assign_add(ops.sum(t * p))
        self.total.assign_add(ops.sum(t) + ops.sum(p))

    def result(self) -> Any:
        """Dice of everything seen since the last reset."""
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0)

    def reset_state(self) -> None:
        """Forget the accumulated counts."""
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration."""
        return {**super().get_config(), "threshold": self.threshold}
