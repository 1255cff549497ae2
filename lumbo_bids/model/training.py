"""Training loop: ``Model.fit`` on the streamed patch datasets, with Keras callbacks.

``train`` picks a ``tf.distribute`` strategy (:func:`select_strategy`), builds and compiles the
model inside its scope, and fits it with: ``BackupAndRestore`` (``checkpoints/backup``: an
interrupted run started again with ``resume=True`` continues at the epoch after the last one
completed), ``ModelCheckpoint`` (``checkpoints/last.weights.h5`` every epoch and
``checkpoints/best.weights.h5`` on the best ``val_dice``), ``EarlyStopping`` on ``val_dice``,
``CSVLogger`` (``metrics.tsv``, tab-separated, one row per epoch), ``TensorBoard``
(``tensorboard/``, when the ``tensorboard`` package is installed) and, optionally,
``ReduceLROnPlateau`` and the progress bar. The returned model carries the weights of the best
validation epoch of the whole run (resumes included).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import options
from .augment import AugmentConfig
from .dataset import TrainingCase, heatmap_slice_dataset, patch_dataset
from .losses import DiceMetric, get_loss

LOGGER = logging.getLogger("lumbo_bids.training")

_CHOICES = options.CHOICES


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (JSON round trip with :meth:`to_dict`/:meth:`from_dict`).

    ``batch_size`` is the global batch (split across GPUs under ``MirroredStrategy``);
    ``patch_size`` has 3 entries for ``task="segmentation"`` (3D patches) and 2 for
    ``task="localisation"`` (2D heat-map windows). ``early_stopping_patience=0`` disables early
    stopping. ``mixed_precision="auto"`` means ``mixed_float16`` when a GPU is used.
    """

    epochs: int = options.EPOCHS
    steps_per_epoch: int = options.STEPS_PER_EPOCH
    validation_steps: int | None = None
    batch_size: int = options.BATCH_SIZE
    learning_rate: float = options.LEARNING_RATE
    lr_schedule: str = "cosine"
    min_learning_rate: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    loss: str = options.LOSS
    bce_weight: float = 1.0
    freeze: str = "none"
    early_stopping_patience: int = options.PATIENCE
    seed: int = 42
    cord_fraction: float = 0.7
    augmentation_strength: float = options.AUGMENTATION
    domain_randomisation: float = 0.0
    synthetic_fraction: float | None = None
    mixed_precision: str | bool = "auto"
    patch_size: tuple[int, ...] = (48, 48, 48)
    val_patches_per_case: int = 8
    task: str = "segmentation"
    heatmap_sigma: float = 3.0
    cord_probability: float = 0.8

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(s) for s in self.patch_size)
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.mixed_precision not in ("auto", True, False):
            raise ValueError(f"TrainConfig.mixed_precision must be 'auto', True or False, got {self.mixed_precision!r}")
        if len(self.patch_size) != (3 if self.task == "segmentation" else 2):
            raise ValueError(f"patch_size {self.patch_size} does not fit task {self.task!r}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_patches_per_case"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or not 0.0 <= self.augmentation_strength <= 1.0:
            raise ValueError("learning_rate must be > 0 and augmentation_strength in [0, 1]")
        if not 0.0 <= self.domain_randomisation <= 1.0:
            raise ValueError(f"TrainConfig.domain_randomisation must be in [0, 1], got {self.domain_randomisation}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (``patch_size`` as a list)."""
        return {**asdict(self), "patch_size": list(self.patch_size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``history`` holds every epoch of the run so far (from ``metrics.tsv``, resumed parts
    included); ``epochs_run`` is the number of epochs completed in total, ``initial_epoch``
    the epoch this call started at (> 0 when resumed).
    """

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    initial_epoch: int
    best_val_dice: float
    best_epoch: int
    device: str
    seconds: float
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def select_strategy() -> tuple[Any, str]:
    """The ``tf.distribute`` strategy for the visible devices, and a description.

    Returns
    -------
    strategy : tf.distribute.Strategy
        ``MirroredStrategy`` over every GPU when there are several, ``OneDeviceStrategy`` on a
        single GPU, the default strategy on CPU (after logging the warning
        ``"no GPU found, training on CPU"``).
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
    LOGGER.warning("no GPU found, training on CPU")
    return tf.distribute.get_strategy(), f"CPU ({platform.machine() or 'unknown'})"


class _LearningRateLog(keras.callbacks.Callback):
    """Put the optimizer's current learning rate in the epoch logs as ``lr``."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
            logs["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def read_metrics(metrics_tsv: Path) -> dict[str, list[float]]:
    """Columns of a ``metrics.tsv`` written by :func:`train` (``epoch`` as floats too)."""
    with open(metrics_tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    columns = list(rows[0]) if rows else []
    return {c: [float(r[c]) if r[c] not in ("", "NA", "n/a") else math.nan for r in rows] for c in columns}


def _backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a ``BackupAndRestore`` backup (0 if none)."""
    meta = backup_dir / "training_metadata.json"
    if not (backup_dir / "latest.weights.h5").is_file() or not meta.is_file():
        return 0
    return int(json.loads(meta.read_text())["epoch"])


def _truncate_metrics(metrics_tsv: Path, keep_before: int) -> float:
    """Drop rows of epochs >= ``keep_before`` (re-run after a resume); best ``val_dice`` kept."""
    if not metrics_tsv.is_file() or not (lines := metrics_tsv.read_text().splitlines()):
        return -math.inf
    kept = [ln for ln in lines[1:] if ln.strip() and int(float(ln.split("\t")[0])) < keep_before]
    metrics_tsv.write_text("\n".join([lines[0], *kept]) + "\n")
    val_dice = read_metrics(metrics_tsv).get("val_dice", [])
    return max((v for v in val_dice if math.isfinite(v)), default=-math.inf)


def _datasets(train_cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase], cfg: TrainConfig, start: int):
    """Training stream (one stream epoch == one Keras epoch) and fixed validation set."""
    augment = None
    if cfg.augmentation_strength > 0:  # domain_randomisation 0: the plain augmentation
        augment = AugmentConfig.domain_randomised(cfg.augmentation_strength, cfg.domain_randomisation)
    common = {"patch_size": cfg.patch_size, "batch_size": cfg.batch_size, "seed": cfg.seed}
    per_epoch, per_case = cfg.steps_per_epoch * cfg.batch_size, cfg.val_patches_per_case
    if cfg.task == "segmentation":
        common["cord_fraction"] = cfg.cord_fraction
        train_ds = patch_dataset(
            train_cases, patches_per_epoch=per_epoch, augment=augment, start_epoch=start, training=True,
            synthetic_fraction=cfg.synthetic_fraction, **common,
        )  # fmt: skip
        return train_ds, patch_dataset(val_cases, patches_per_case=per_case, training=False, **common)
    common.update(sigma=cfg.heatmap_sigma, cord_probability=cfg.cord_probability)
    train_ds = heatmap_slice_dataset(
        train_cases, slices_per_epoch=per_epoch, augment=augment, start_epoch=start, training=True, **common
    )
    return train_ds, heatmap_slice_dataset(val_cases, slices_per_case=per_case, training=False, **common)


def _optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    lr: Any = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate,
            decay_steps=cfg.epochs * cfg.steps_per_epoch,
            alpha=min(1.0, cfg.min_learning_rate / cfg.learning_rate),
        )
    return keras.optimizers.Adam(learning_rate=lr)


def _callbacks(cfg: TrainConfig, out_dir: Path, progress: bool, initial_epoch: int, best_so_far: float) -> list:
    ckpt, best = out_dir / "checkpoints", (best_so_far if best_so_far > -math.inf else None)
    on_val_dice = {"monitor": "val_dice", "mode": "max"}
    callbacks: list[keras.callbacks.Callback] = [
        _LearningRateLog(),
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
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False, profile_batch=0))
    else:
        LOGGER.warning("the tensorboard package is not installed: no TensorBoard logs (metrics.tsv is written)")
    if cfg.early_stopping_patience > 0:
        patience = cfg.early_stopping_patience
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True, **on_val_dice))
    if cfg.lr_schedule == "plateau":
        plateau = {"factor": cfg.plateau_factor, "patience": cfg.plateau_patience, "min_lr": cfg.min_learning_rate}
        callbacks.append(keras.callbacks.ReduceLROnPlateau(verbose=int(progress), **plateau, **on_val_dice))
    return callbacks


def train(
    model_fn: Callable[[], keras.Model],
    train_cases: Sequence[TrainingCase],
    val_cases: Sequence[TrainingCase],
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    freeze_fn: Callable[[keras.Model, str], Any] | None = None,
    progress: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train (or fine-tune) the model that ``model_fn`` builds, with checkpoints and resume.

    Parameters
    ----------
    model_fn : callable
        Returns a new (sigmoid-output) Keras model; called inside the strategy's scope.
    train_cases, val_cases : sequence of TrainingCase
        Training and validation cases (a subject-wise split; neither may be empty).
    cfg : TrainConfig
        Hyper-parameters.
    out_dir : Path
        Run folder: ``metrics.tsv``, ``checkpoints/``, ``tensorboard/``, ``train_config.json``.
    resume : bool
        Continue from ``checkpoints/backup`` when present (same ``cfg`` expected). When False an
        existing backup is deleted and the run starts at epoch 0.
    freeze_fn : callable, optional
        ``freeze_fn(model, cfg.freeze)`` sets which layers train, called before compiling when
        ``cfg.freeze != "none"`` (default :func:`lumbo_bids.model.network.freeze_depth`).
    progress : bool
        Show the Keras progress bar (``verbose=1``).
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks, run after the built-in ones.

    Returns
    -------
    TrainResult
        With the model holding the weights of the best ``val_dice`` epoch.
    """
    if not train_cases or not val_cases:
        raise ValueError(f"need training and validation cases (got {len(train_cases)} and {len(val_cases)})")
    started = time.time()
    out_dir = Path(out_dir)
    backup_dir = out_dir / "checkpoints" / "backup"
    metrics_tsv = out_dir / "metrics.tsv"
    if not resume and backup_dir.exists():
        LOGGER.info("removing the backup of a previous run (%s): starting afresh", backup_dir)
        shutil.rmtree(backup_dir)
    initial_epoch = _backup_epoch(backup_dir) if resume else 0
    if resume and initial_epoch == 0:
        LOGGER.warning("resume requested but no backup in %s: training from epoch 0", backup_dir)
    best_so_far = _truncate_metrics(metrics_tsv, initial_epoch) if initial_epoch else -math.inf
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "train_config.json"
    if initial_epoch and saved.is_file() and json.loads(saved.read_text()) != cfg.to_dict():
        LOGGER.warning("resuming with settings that differ from %s: the backup may not fit them", saved)
    saved.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    strategy, device = select_strategy()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = on_gpu if cfg.mixed_precision == "auto" else bool(cfg.mixed_precision)
    if mixed and not on_gpu:
        LOGGER.warning("mixed precision requested but no GPU: training in float32")
        mixed = False
    LOGGER.info("training on %s%s, from epoch %d", device, " (mixed_float16)" if mixed else "", initial_epoch)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            model = model_fn()
            if cfg.freeze != "none":
                if freeze_fn is None:
                    from .network import freeze_depth as freeze_fn
                freeze_fn(model, cfg.freeze)
            model.compile(
                optimizer=_optimizer(cfg),
                loss=get_loss(cfg.loss, cfg.bce_weight),
                metrics=[DiceMetric(name="dice")],
            )
        train_ds, val_ds = _datasets(train_cases, val_cases, cfg, initial_epoch)
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.epochs,
            steps_per_epoch=cfg.steps_per_epoch,
            validation_steps=cfg.validation_steps,
            callbacks=[*_callbacks(cfg, out_dir, progress, initial_epoch, best_so_far), *callbacks],
            verbose=1 if progress else 0,
            shuffle=False,  # the stream is already shuffled (and must stay a function of the seed)
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    if metrics_tsv.is_file():  # CSVLogger ends rows with CRLF (csv.excel); keep plain newlines
        metrics_tsv.write_text("\n".join(metrics_tsv.read_text().splitlines()) + "\n")
    best_weights = out_dir / "checkpoints" / "best.weights.h5"
    if best_weights.is_file():
        model.load_weights(best_weights)
    history = read_metrics(metrics_tsv) if metrics_tsv.is_file() else {}
    val_dice = np.asarray(history.get("val_dice", []), dtype=float)
    best = int(np.nanargmax(val_dice)) if val_dice.size and np.isfinite(val_dice).any() else -1
    return TrainResult(
        model=model,
        history=history,
        epochs_run=len(history.get("epoch", [])),
        initial_epoch=initial_epoch,
        best_val_dice=float(val_dice[best]) if best >= 0 else math.nan,
        best_epoch=int(history["epoch"][best]) if best >= 0 else -1,
        device=device,
        seconds=time.time() - started,
        out_dir=out_dir,
        files={"metrics": metrics_tsv, "best_weights": best_weights, "last_weights": best_weights.parent / "last.weights.h5"},
    )


def with_image_dice(metrics_tsv: Path, before: float, after: float, kept_epoch: int) -> str:
    """``metrics.tsv`` text with a ``val_image_dice`` column: the mean whole-image validation Dice
    (segmented as the participant level does) before fine-tuning, as a first row ``epoch -1``,
    and of the kept model on the row of ``kept_epoch``; ``n/a`` elsewhere (patch Dice only)."""
    lines = [ln for ln in Path(metrics_tsv).read_text().splitlines() if ln.strip()]
    header = lines[0].split("\t")
    start = ["-1" if c == "epoch" else "n/a" for c in header] + [f"{before:.4f}"]
    rows = ["\t".join([*header, "val_image_dice"]), "\t".join(start)]
    for line in lines[1:]:
        epoch = int(float(line.split("\t")[0]))
        rows.append(f"{line}\t{after:.4f}" if epoch == kept_epoch else f"{line}\tn/a")
    return "\n".join(rows) + "\n"


def plot_history(metrics_tsv: Path, png_path: Path) -> Path:
    """Draw the loss and Dice curves (training and validation) of a ``metrics.tsv`` as a PNG;
    a ``val_image_dice`` column (:func:`with_image_dice`) is drawn as the before/after points.

    Parameters
    ----------
    metrics_tsv : Path
        File written by :func:`train`.
    png_path : Path
        Output image (folders created).

    Returns
    -------
    Path
        ``png_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = read_metrics(Path(metrics_tsv))
    if not history.get("epoch"):
        raise ValueError(f"{metrics_tsv} has no epoch rows to plot")
    epochs = np.asarray(history["epoch"]) + 1  # the starting point (epoch -1) lands at 0
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "dice"), ("Loss", "Dice (threshold 0.5)")):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            if name in history:
                ax.plot(epochs, history[name], style, markersize=3, label=name)
        if key == "dice" and "val_image_dice" in history:
            image_dice = np.asarray(history["val_image_dice"])
            shown = np.isfinite(image_dice)
            label = "whole-image validation Dice (start, kept model)"
            ax.plot(epochs[shown], image_dice[shown], "D:", color="tab:red", markersize=6, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, format="png")
    return png_path
