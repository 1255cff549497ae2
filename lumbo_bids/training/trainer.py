"""Training loop: ``Model.fit`` on the streamed patch datasets, with Keras callbacks.

``train`` picks the backend's distribution (:func:`~lumbo_bids.training.devices.select_strategy`),
builds and compiles the model inside its scope, and fits it with the callbacks of
:func:`~lumbo_bids.training.callbacks.training_callbacks`: ``BackupAndRestore``
(``checkpoints/backup``: an interrupted run started again with ``resume=True`` continues at the
epoch after the last one completed), ``ModelCheckpoint`` (``checkpoints/last.weights.h5`` every
epoch and ``checkpoints/best.weights.h5`` on the best ``val_dice``), ``EarlyStopping`` on
``val_dice``, ``CSVLogger`` (``metrics.tsv``, tab-separated, one row per epoch; see
:mod:`lumbo_bids.training.history`), ``TensorBoard`` (``tensorboard/``, when the ``tensorboard``
package is installed) and, optionally, ``ReduceLROnPlateau`` and the progress bar. The returned
model carries the weights of the best validation epoch of the whole run (resumes included); a
:class:`~lumbo_bids.training.distil.Distiller` comes back as its student alone.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras

from .. import options
from .augment import AugmentConfig
from .callbacks import training_callbacks
from .cases import TrainingCase
from .dataset import heatmap_slice_dataset, patch_dataset
from .devices import mixed_policy, precision_policy, select_strategy
from .distil import inference_model
from .history import backup_epoch, best_row, plain_newlines, read_metrics, truncate_metrics
from .losses import DiceMetric, get_loss

LOGGER = logging.getLogger("lumbo_bids.training")

_CHOICES = options.CHOICES


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (JSON round trip with :meth:`to_dict`/:meth:`from_dict`).

    ``batch_size`` is the global batch (split across GPUs under ``MirroredStrategy``);
    ``patch_size`` has 3 entries for ``task="segmentation"`` (3D patches) and 2 for
    ``task="localisation"`` (2D heat-map windows). ``early_stopping_patience=0`` disables early
    stopping. ``mixed_precision="auto"`` means mixed precision when a GPU is used (``mixed_bfloat16``
    on GPUs with native bf16, else ``mixed_float16``: :func:`~lumbo_bids.training.devices.mixed_policy`).
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
    cldice_weight: float = 0.0
    slice_dice_weight: float = 0.0
    freeze: str = "none"
    early_stopping_patience: int = options.PATIENCE
    seed: int = 42
    cord_fraction: float = 0.7
    end_fraction: float = 0.0
    augmentation_strength: float = options.AUGMENTATION
    domain_randomisation: float = 0.0
    thick_axes: str = "axial"
    grey_matter: float = 0.0
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
        if not 0.0 <= self.end_fraction <= 1.0:
            raise ValueError(f"TrainConfig.end_fraction must be in [0, 1], got {self.end_fraction}")
        if not 0.0 <= self.grey_matter <= 1.0:
            raise ValueError(f"TrainConfig.grey_matter must be in [0, 1], got {self.grey_matter}")
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


def _datasets(
    train_cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase], cfg: TrainConfig, start: int,
    loader: str = "auto", clean_view: bool = False,
):  # fmt: skip
    """Training stream (one stream epoch == one Keras epoch) and fixed validation set
    (:mod:`lumbo_bids.training.dataset`, by ``loader``; ``clean_view`` for a distiller's clean teacher)."""
    augment = None
    if cfg.augmentation_strength > 0:  # domain_randomisation 0: the plain augmentation
        augment = AugmentConfig.domain_randomised(cfg.augmentation_strength, cfg.domain_randomisation, cfg.thick_axes)
    common = {"patch_size": cfg.patch_size, "batch_size": cfg.batch_size, "seed": cfg.seed, "loader": loader}
    per_epoch, per_case = cfg.steps_per_epoch * cfg.batch_size, cfg.val_patches_per_case
    if cfg.task == "segmentation":
        common.update(cord_fraction=cfg.cord_fraction, grey_matter=cfg.grey_matter, end_fraction=cfg.end_fraction)
        train_ds = patch_dataset(
            train_cases, patches_per_epoch=per_epoch, augment=augment, start_epoch=start, training=True,
            synthetic_fraction=cfg.synthetic_fraction, clean_view=clean_view, **common,
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
    loader: str = "auto",
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
        Extra callbacks, run after the built-in ones; one with a ``resume_best(value)`` method is
        told the best ``val_dice`` of the epochs a resumed run keeps (``-inf`` for a new run).
    loader : {"auto", "tf.data", "python"}
        How batches reach ``fit`` (:mod:`lumbo_bids.training.dataset`): ``tf.data`` on the
        TensorFlow backend, a ``keras.utils.PyDataset`` on the others (``"auto"``).

    Returns a :class:`TrainResult`, its model holding the weights of the best ``val_dice`` epoch.
    """
    if not train_cases or not val_cases:
        raise ValueError(f"need training and validation cases (got {len(train_cases)} and {len(val_cases)})")
    started = time.time()
    out_dir = Path(out_dir)
    initial_epoch, best_so_far = _prepare_run_dir(out_dir, cfg, resume)

    keras.utils.set_random_seed(cfg.seed)
    strategy, device = select_strategy()
    policy = mixed_policy(cfg.mixed_precision)
    LOGGER.info("training on %s%s, from epoch %d", device, f" ({policy})" if policy else "", initial_epoch)
    with precision_policy(policy), strategy.scope():  # JAX's DataParallel shards the batches in fit
        model = _compiled_model(model_fn, cfg, freeze_fn)  # a distiller's clean teacher needs clean views:
        train_ds, val_ds = _datasets(train_cases, val_cases, cfg, initial_epoch, loader, getattr(model, "clean_view", False))
        built_in = training_callbacks(cfg, out_dir, progress, initial_epoch, best_so_far)
        for callback in callbacks:  # a progress line's "(best)" then compares with the kept epochs too
            if hasattr(callback, "resume_best"):
                callback.resume_best(best_so_far)
        _fit(model, train_ds, val_ds, cfg, [*built_in, *callbacks], progress)
    return _result(model, out_dir, initial_epoch, device, started)


def _prepare_run_dir(out_dir: Path, cfg: TrainConfig, resume: bool) -> tuple[int, float]:
    """Set up ``out_dir`` for a run: the epoch it starts at and the best ``val_dice`` kept so far.

    Without ``resume`` a previous backup is deleted; with it, the rows of the epochs after the
    backup are dropped from ``metrics.tsv``. ``train_config.json`` is (re)written.
    """
    backup_dir = out_dir / "checkpoints" / "backup"
    if not resume and backup_dir.exists():
        LOGGER.info("removing the backup of a previous run (%s): starting afresh", backup_dir)
        shutil.rmtree(backup_dir)
    initial_epoch = backup_epoch(backup_dir) if resume else 0
    if resume and initial_epoch == 0:
        LOGGER.warning("resume requested but no backup in %s: training from epoch 0", backup_dir)
    best_so_far = truncate_metrics(out_dir / "metrics.tsv", initial_epoch) if initial_epoch else -math.inf
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "train_config.json"
    if initial_epoch and saved.is_file() and json.loads(saved.read_text()) != cfg.to_dict():
        LOGGER.warning("resuming with settings that differ from %s: the backup may not fit them", saved)
    saved.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return initial_epoch, best_so_far


def _compiled_model(
    model_fn: Callable[[], keras.Model], cfg: TrainConfig, freeze_fn: Callable[[keras.Model, str], Any] | None
) -> keras.Model:
    """The model of ``model_fn``, frozen as ``cfg.freeze`` says, compiled (call in the strategy's scope)."""
    model = model_fn()
    if cfg.freeze != "none":
        if freeze_fn is None:
            from ..model.network import freeze_depth as freeze_fn
        freeze_fn(model, cfg.freeze)
    model.compile(
        optimizer=_optimizer(cfg),
        loss=get_loss(cfg.loss, cfg.bce_weight, cldice_weight=cfg.cldice_weight, slice_dice_weight=cfg.slice_dice_weight),
        metrics=[DiceMetric(name="dice")],
    )
    return model


def _fit(model: keras.Model, train_ds: Any, val_ds: Any, cfg: TrainConfig, callbacks: list, progress: bool) -> None:
    """``model.fit`` for ``cfg.epochs`` epochs of ``cfg.steps_per_epoch`` batches (then the
    training stream's producer, if any, is stopped)."""
    try:
        _fit_once(model, train_ds, val_ds, cfg, callbacks, progress)
    finally:
        if hasattr(train_ds, "close"):
            train_ds.close()


def _fit_once(model: keras.Model, train_ds: Any, val_ds: Any, cfg: TrainConfig, callbacks: list, progress: bool) -> None:
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        validation_steps=cfg.validation_steps,
        callbacks=callbacks,
        verbose=1 if progress else 0,
        shuffle=False,  # the stream is already shuffled (and must stay a function of the seed)
    )


def _result(model: keras.Model, out_dir: Path, initial_epoch: int, device: str, started: float) -> TrainResult:
    """Load the best epoch's weights into ``model`` and gather the run's outcome."""
    metrics_tsv = out_dir / "metrics.tsv"
    if metrics_tsv.is_file():
        plain_newlines(metrics_tsv)
    best_weights = out_dir / "checkpoints" / "best.weights.h5"
    if best_weights.is_file():
        model.load_weights(best_weights)
    model = inference_model(model)  # a distiller's student (its checkpoints hold the teacher too)
    history = read_metrics(metrics_tsv) if metrics_tsv.is_file() else {}
    best = best_row(history)
    return TrainResult(
        model=model,
        history=history,
        epochs_run=len(history.get("epoch", [])),
        initial_epoch=initial_epoch,
        best_val_dice=float(history["val_dice"][best]) if best >= 0 else math.nan,
        best_epoch=int(history["epoch"][best]) if best >= 0 else -1,
        device=device,
        seconds=time.time() - started,
        out_dir=out_dir,
        files={"metrics": metrics_tsv, "best_weights": best_weights, "last_weights": best_weights.parent / "last.weights.h5"},
    )
