"""Where training runs: the ``tf.distribute`` strategy for the visible devices and the precision."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras

LOGGER = logging.getLogger("lumbo_bids.training")
_SAID = set()  # what this process has already told the user (a group run trains several networks)


def select_strategy() -> tuple[Any, str]:
    """The ``tf.distribute`` strategy for the visible devices, and a description.

    Returns
    -------
    strategy : tf.distribute.Strategy
        ``MirroredStrategy`` over every GPU when there are several, ``OneDeviceStrategy`` on a
        single GPU, the default strategy on CPU (after logging the warning
        ``"no GPU found, training on CPU"``, once per process; again at debug level).
    description : str
        E.g. ``"MirroredStrategy over 4 GPUs"``, ``"1 GPU (NVIDIA H100)"``, ``"CPU (x86_64)"``.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return strategy, f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs"
    if len(gpus) == 1:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        return tf.distribute.OneDeviceStrategy("/gpu:0"), f"1 GPU ({name})"
    LOGGER.log(logging.DEBUG if "no GPU" in _SAID else logging.WARNING, "no GPU found, training on CPU")
    _SAID.add("no GPU")
    return tf.distribute.get_strategy(), f"CPU ({platform.machine() or 'unknown'})"


def use_mixed_precision(setting: str | bool) -> bool:
    """Whether to train in ``mixed_float16``: ``"auto"`` means on a GPU; never without a GPU."""
    import tensorflow as tf

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = on_gpu if setting == "auto" else bool(setting)
    if mixed and not on_gpu:
        LOGGER.warning("mixed precision requested but no GPU: training in float32")
        mixed = False
    return mixed


@contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Run the block under the ``mixed_float16`` global policy if ``mixed``; restore the previous one after."""
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
