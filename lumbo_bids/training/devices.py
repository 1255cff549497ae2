"""Where training runs, on any Keras 3 backend: the devices, the distribution over them, the precision.

================  ==========================================  =======================================
backend           several GPUs                                one GPU / CPU
================  ==========================================  =======================================
``tensorflow``    ``tf.distribute.MirroredStrategy``          ``OneDeviceStrategy("/gpu:0")`` / default
``jax``           ``keras.distribution.DataParallel``          the default device (XLA places it)
``torch``         one GPU (Keras' torch backend has no         ``cuda:0`` / CPU
                  data parallelism): a warning says so
================  ==========================================  =======================================

Mixed precision (``"auto"``: on a GPU only) is ``mixed_bfloat16`` where every GPU computes bf16
natively (compute capability 8.0 and newer: A100, H100/H200...), else ``mixed_float16``.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras

LOGGER = logging.getLogger("lumbo_bids.training")
_SAID = set()  # what this process has already told the user (a group run trains several networks)


@dataclass(frozen=True)
class Accelerator:
    """One GPU as the backend sees it."""

    name: str  # e.g. "NVIDIA H200"
    compute_capability: tuple[int, int] | None = None  # (9, 0); None when the backend does not say


def _capability(value: Any) -> tuple[int, int] | None:
    """``(major, minor)`` from ``"9.0"``, ``(9, 0)`` or None."""
    if value is None or value == "":
        return None
    parts = value if isinstance(value, tuple) else str(value).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (TypeError, ValueError):
        return None


def accelerators() -> list[Accelerator]:
    """The GPUs that the Keras backend of this process can use (empty on CPU)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            found.append(Accelerator(details.get("device_name", gpu.name), _capability(details.get("compute_capability"))))
        return found
    if backend == "jax":
        import jax

        try:
            gpus = jax.devices("gpu")
        except RuntimeError:  # no GPU platform in this jaxlib, or none visible
            return []
        return [Accelerator(d.device_kind, _capability(getattr(d, "compute_capability", None))) for d in gpus]
    if backend == "torch":
        import torch

        return [
            Accelerator(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
            for i in range(torch.cuda.device_count())
        ]
    return []


class _Local:
    """The backend's own placement (one device): a ``scope()`` that changes nothing."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def _cpu_warning() -> None:
    LOGGER.log(logging.DEBUG if "no GPU" in _SAID else logging.WARNING, "no GPU found, training on CPU")
    _SAID.add("no GPU")


def select_strategy() -> tuple[Any, str]:
    """The distribution for the visible devices (an object with ``scope()``), and a description.

    Returns
    -------
    strategy : tf.distribute.Strategy, keras.distribution.DataParallel or a local placement
        Build, compile and fit the model inside ``strategy.scope()`` (see the table above). On
        CPU the warning ``"no GPU found, training on CPU"`` is logged once per process (again at
        debug level).
    description : str
        E.g. ``"MirroredStrategy over 4 GPUs"``, ``"DataParallel over 8 GPUs (jax)"``,
        ``"1 GPU (NVIDIA H200, jax)"``, ``"CPU (x86_64)"``.
    """
    backend = keras.backend.backend()
    gpus = accelerators()
    if backend == "tensorflow":
        import tensorflow as tf

        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            return strategy, f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs"
        if len(gpus) == 1:
            return tf.distribute.OneDeviceStrategy("/gpu:0"), f"1 GPU ({gpus[0].name})"
        _cpu_warning()
        return tf.distribute.get_strategy(), f"CPU ({platform.machine() or 'unknown'})"
    if not gpus:
        _cpu_warning()
        return _Local(), f"CPU ({platform.machine() or 'unknown'}, {backend})"
    if len(gpus) > 1 and backend == "jax":
        devices = keras.distribution.list_devices("gpu")
        return keras.distribution.DataParallel(devices=devices), f"DataParallel over {len(devices)} GPUs (jax)"
    if len(gpus) > 1:
        LOGGER.warning("the %s backend trains on one GPU: using 1 of %d (jax or tensorflow use them all)", backend, len(gpus))
    return _Local(), f"1 GPU ({gpus[0].name}, {backend})"


def mixed_policy(setting: str | bool) -> str | None:
    """The mixed-precision policy to train under, or None for float32.

    ``"auto"`` means on a GPU (never without one); ``mixed_bfloat16`` where every GPU has native
    bf16 (compute capability >= 8.0), else ``mixed_float16`` (with loss scaling).
    """
    gpus = accelerators()
    mixed = bool(gpus) if setting == "auto" else bool(setting)
    if mixed and not gpus:
        LOGGER.warning("mixed precision requested but no GPU: training in float32")
        return None
    if not mixed:
        return None
    bf16 = all(g.compute_capability is not None and g.compute_capability >= (8, 0) for g in gpus)
    return "mixed_bfloat16" if bf16 else "mixed_float16"


@contextmanager
def precision_policy(policy: str | bool | None) -> Iterator[None]:
    """Run the block under the global ``policy`` (``"mixed_bfloat16"``/``"mixed_float16"``; True
    means ``mixed_float16``; None/False float32); restore the previous one after."""
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if policy:
            keras.mixed_precision.set_global_policy("mixed_float16" if policy is True else policy)
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
