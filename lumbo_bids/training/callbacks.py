"""The Keras callbacks of a training run: metrics log, checkpoints, backup, early stopping, learning rate.

``CSVLogger`` (``metrics.tsv``, tab-separated, one row per epoch), ``ModelCheckpoint``
(``checkpoints/last.weights.h5`` every epoch and ``checkpoints/best.weights.h5`` on the best
``val_dice``), ``BackupAndRestore`` (``checkpoints/backup``), ``TensorBoard`` (``tensorboard/``,
when the ``tensorboard`` package is installed), ``EarlyStopping`` on ``val_dice`` and,
optionally, ``ReduceLROnPlateau``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from .trainer import TrainConfig

LOGGER = logging.getLogger("lumbo_bids.training")


class LearningRateLog(keras.callbacks.Callback):
    """Put the optimizer's current learning rate in the epoch logs as ``lr``."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
            logs["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def training_callbacks(cfg: TrainConfig, out_dir: Path, progress: bool, initial_epoch: int, best_so_far: float) -> list:
    """The built-in callbacks of a run in ``out_dir`` starting at ``initial_epoch``.

    ``best_so_far`` is the best ``val_dice`` of the epochs a resumed run keeps (``-inf`` for
    none): the best checkpoint is only replaced by a better epoch.
    """
    ckpt, best = out_dir / "checkpoints", (best_so_far if best_so_far > -math.inf else None)
    on_val_dice = {"monitor": "val_dice", "mode": "max"}
    callbacks: list[keras.callbacks.Callback] = [
        LearningRateLog(),
        # before anything that adds "learning_rate" to the logs; written before the backup so
        # that a crash in between leaves a row that the resume truncates, never a missing one
        keras.callbacks.CSVLogger(str(out_dir / "metrics.tsv"), separator="\t", append=initial_epoch > 0),
        keras.callbacks.ModelCheckpoint(str(ckpt / "last.weights.h5"), save_weights_only=True),
        keras.callbacks.ModelCheckpoint(
            str(ckpt / "best.weights.h5"),
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
            **on_val_dice,
        ),  # fmt: skip
        keras.callbacks.BackupAndRestore(str(ckpt / "backup")),
    ]
    # Keras writes TensorBoard logs through tf.summary on every backend: both packages are needed
    missing = [name for name in ("tensorboard", "tensorflow") if importlib.util.find_spec(name) is None]
    if not missing:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False, profile_batch=0))
    else:
        LOGGER.warning("%s not installed: no TensorBoard logs (metrics.tsv is written)", " and ".join(missing))
    if cfg.early_stopping_patience > 0:
        patience = cfg.early_stopping_patience
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True, **on_val_dice))
    if cfg.lr_schedule == "plateau":
        plateau = {"factor": cfg.plateau_factor, "patience": cfg.plateau_patience, "min_lr": cfg.min_learning_rate}
        callbacks.append(keras.callbacks.ReduceLROnPlateau(verbose=int(progress), **plateau, **on_val_dice))
    return callbacks
