"""Knowledge distillation: one network trained to give what an ensemble gives.

The seed ensemble is steadier than any one of its members but costs one forward pass per
member. :class:`Distiller` trains a *student* (one network) on the usual patches with a target
that blends the hard label and the *teacher*'s (the ensemble's) probability:
``target = (1 - weight) * label + weight * teacher(x)``, under the run's own loss (Dice + BCE).
The teacher is frozen and runs in inference mode; only the student learns. At inference the
distiller is just its student (:meth:`Distiller.call`), and :func:`inference_model` hands the
student alone to everything after training (artifact, evaluation), so a distilled artifact is
an ordinary single network.

With ``through_only`` the teacher's share applies only to patches that the labelled cord crosses
from one end of the patch's z axis to the other; where the cord ends inside the patch or is absent,
the label alone is the target. A teacher known to misplace the cord's end (the conus) and to take
the roots below it for cord then teaches only the cord's course, not where it ends. A patch that the
cord crosses may still hold the upper part of the conus taper (the tip below the patch): with
``full_width`` (a share, e.g. 0.5) the teacher's share applies only to crossed patches whose thinnest
labelled slice keeps at least that share of the widest one's area, so a teacher that gives up on
the tapering conus does not teach that either (a cervical cord, whose area changes little over a
patch, keeps its teacher).

With ``clean_view`` the teacher sees the *clean* patch: the same anatomy after the spatial
augmentation only, before contrast, resolution (thick slices), artefacts and noise, which the
training targets then carry as a second channel (:func:`lumbo_bids.training.augment.augment_pair`,
``clean_view``). A teacher that fails on thick coronal or sagittal slices would teach its failure
when it sees the student's patch; on the clean patch it gives what it gives on a 0.5 mm image, and
the student learns to give that from the degraded one (distillation with privileged information).
Targets of one channel (validation, or no augmentation) fall back to the student's patch.

Backend agnostic: the blend happens in :meth:`keras.Model.compute_loss`, which every Keras 3
backend's ``train_step`` calls; the metrics still compare the prediction with the hard label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops


class Distiller(keras.Model):
    """A student trained towards a blend of the label and a frozen teacher's probability.

    Parameters
    ----------
    student : keras.Model
        The network that learns (sigmoid output).
    teacher : keras.Model
        A network (or ensemble) of the same input and output shape; frozen.
    weight : float
        Share of the teacher's probability in the target, in [0, 1] (0: plain training).
    through_only : bool
        The teacher's share only on patches whose label crosses the whole z axis (see above).
    clean_view : bool
        The teacher sees the clean view that two-channel targets carry (see above); the trainer
        asks the dataset for it when this is set.
    full_width : float
        With ``through_only``: the teacher only on crossed patches whose thinnest slice has at least
        this share of the widest slice's labelled area (0: every crossed patch; see above).
    """

    def __init__(
        self, student: keras.Model, teacher: keras.Model, weight: float = 0.5, through_only: bool = False,
        clean_view: bool = False, full_width: float = 0.0, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distillation weight must be in [0, 1], got {weight}")
        if not 0.0 <= full_width <= 1.0 or (full_width > 0 and not through_only):
            raise ValueError(f"full_width must be in [0, 1] and needs through_only, got {full_width}")
        if not _fits(student.output.shape, teacher.output.shape):
            raise ValueError(f"teacher output {teacher.output.shape} does not fit the student's {student.output.shape}")
        self.student, self.teacher, self.weight = student, teacher, float(weight)
        self.through_only, self.clean_view, self.full_width = bool(through_only), bool(clean_view), float(full_width)
        self.teacher.trainable = False

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The student's prediction (what inference and the metrics see)."""
        return self.student(inputs, training=training)

    def soft_target(self, x: Any, y: Any) -> Any:
        """``(1 - w) * y + w * teacher(x)`` (float32, no gradient through the teacher); ``w`` is
        ``weight``, or with ``through_only`` ``weight`` on the patches the cord crosses (at full width,
        with ``full_width``) and 0 elsewhere.
        A two-channel ``y`` is the label and the clean view, which the teacher then sees instead of ``x``."""
        y, seen = _label(y), (y[..., 1:] if y.shape[-1] == 2 else x)
        y = ops.cast(y, "float32")
        soft = ops.stop_gradient(ops.cast(self.teacher(seen, training=False), "float32"))
        weight = self.weight
        if self.through_only:  # (batch, x, y, z, channel): cord on every z slice of the patch
            crossed = ops.cast(ops.min(ops.max(y, axis=(1, 2, 4)), axis=1) > 0.5, "float32")
            if self.full_width > 0:  # and no slice of it thinner than full_width of the widest (no taper)
                area = ops.sum(ops.cast(y > 0.5, "float32"), axis=(1, 2, 4))
                wide = ops.min(area, axis=1) >= self.full_width * ops.max(area, axis=1)
                crossed = crossed * ops.cast(wide, "float32")
            weight = self.weight * ops.reshape(crossed, (-1, 1, 1, 1, 1))
        return (1.0 - weight) * y + weight * soft

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self.soft_target(x, y), y_pred, sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The metrics on the hard label (a clean view's channel dropped)."""
        return super().compute_metrics(x, _label(y), y_pred, sample_weight)


def _label(y: Any) -> Any:
    """The label channel of a target (the first of a label and its clean view)."""
    return y[..., :1] if y.shape[-1] == 2 else y


def _fits(a: tuple, b: tuple) -> bool:
    """Two shapes of the same rank whose known sizes agree (``None`` fits any size)."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def distilled(
    build_student: Callable[[], keras.Model],
    build_teacher: Callable[[], keras.Model],
    weight: float,
    through_only: bool = False,
    clean_view: bool = False,
    full_width: float = 0.0,
):
    """A ``model_fn`` for :func:`~lumbo_bids.training.trainer.train` that builds a :class:`Distiller`
    (student and teacher built inside the caller's distribution scope)."""

    def model_fn() -> Distiller:
        student = build_student()
        distiller = Distiller(student, build_teacher(), weight, through_only, clean_view, full_width)
        distiller.build(tuple(student.input.shape))
        return distiller

    return model_fn


def inference_model(model: keras.Model) -> keras.Model:
    """The network that inference runs: a distiller's student, any other model itself."""
    return model.student if isinstance(model, Distiller) else model
