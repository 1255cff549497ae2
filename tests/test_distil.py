"""Knowledge distillation (lumbo_bids.training.distil): the blended target, and a run whose
student follows its teacher rather than the labels."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lumbo_bids.training.distil import Distiller, distilled, inference_model
from lumbo_bids.training.losses import get_loss
from lumbo_bids.training.trainer import train
from tests.test_training import PATCH, small_config, tiny_net, write_tube_case


def constant_net(probability: float, shape=PATCH) -> keras.Model:
    """A network that says ``probability`` at every voxel (zero kernel, bias = its logit)."""
    inputs = keras.Input((*shape, 1))
    logit = float(np.log(probability / (1.0 - probability)))
    head = keras.layers.Conv3D(
        1, 1, activation="sigmoid", kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(logit)
    )
    return keras.Model(inputs, head(inputs))


def test_the_target_blends_label_and_teacher():
    student, teacher = tiny_net(), constant_net(0.8)
    distiller = Distiller(student, teacher, weight=0.25)
    distiller.compile(optimizer="adam", loss=get_loss("dice_bce"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *PATCH, 1)).astype(np.float32)
    y = (rng.random((2, *PATCH, 1)) > 0.7).astype(np.float32)
    target = keras.ops.convert_to_numpy(distiller.soft_target(x, y))
    np.testing.assert_allclose(target, 0.75 * y + 0.25 * 0.8, atol=1e-6)
    y_pred = distiller(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y_pred), keras.ops.convert_to_numpy(student(x)), atol=1e-6)
    loss = keras.ops.convert_to_numpy(distiller.compute_loss(x, y, y_pred))
    expected = keras.ops.convert_to_numpy(get_loss("dice_bce")(0.75 * y + 0.2, y_pred))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_through_only_keeps_the_teacher_off_patches_where_the_cord_ends():
    distiller = Distiller(tiny_net(), constant_net(0.8), weight=0.5, through_only=True)
    y = np.zeros((3, *PATCH, 1), np.float32)
    y[0, 3:6, 3:6, :, 0] = 1  # the cord crosses the whole patch along z
    y[1, 3:6, 3:6, PATCH[2] // 2 :, 0] = 1  # the cord ends inside the patch (a conus)
    x = np.zeros_like(y)  # y[2]: no cord at all
    target = keras.ops.convert_to_numpy(distiller.soft_target(x, y))
    np.testing.assert_allclose(target[0], 0.5 * y[0] + 0.4, atol=1e-6)
    np.testing.assert_allclose(target[1:], y[1:], atol=1e-6)  # the label alone
    blended = Distiller(tiny_net(), constant_net(0.8), weight=0.5)  # the default: every patch
    np.testing.assert_allclose(keras.ops.convert_to_numpy(blended.soft_target(x, y)), 0.5 * y + 0.4, atol=1e-6)


def test_full_width_keeps_the_teacher_off_a_taper_that_crosses_the_patch():
    """A cord that crosses the patch but tapers inside it (the upper conus, its tip below the patch)
    gets the label alone with full_width; a cord of constant width keeps its teacher."""
    distiller = Distiller(tiny_net(), constant_net(0.8), weight=0.5, through_only=True, full_width=0.5)
    y = np.zeros((2, *PATCH, 1), np.float32)
    y[0, 2:7, 2:7, :, 0] = 1  # 25 voxels on every slice
    y[1, 2:7, 2:7, PATCH[2] // 2 :, 0] = 1  # full width above the middle,
    y[1, 4:6, 4:6, : PATCH[2] // 2, 0] = 1  # 4 voxels below: crossed, but a taper
    target = keras.ops.convert_to_numpy(distiller.soft_target(np.zeros_like(y), y))
    np.testing.assert_allclose(target[0], 0.5 * y[0] + 0.4, atol=1e-6)
    np.testing.assert_allclose(target[1], y[1], atol=1e-6)
    loose = Distiller(tiny_net(), constant_net(0.8), weight=0.5, through_only=True, full_width=0.1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loose.soft_target(np.zeros_like(y), y))[1], 0.5 * y[1] + 0.4, atol=1e-6)
    with pytest.raises(ValueError, match="full_width"):
        Distiller(tiny_net(), constant_net(0.8), weight=0.5, full_width=0.5)  # needs through_only


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="weight"):
        Distiller(tiny_net(), constant_net(0.5), weight=1.5)
    with pytest.raises(ValueError, match="does not fit"):
        Distiller(tiny_net(), constant_net(0.5, shape=(8, 8, 8)), weight=0.5)
    plain = tiny_net()
    assert inference_model(plain) is plain


def test_a_distilled_student_follows_its_teacher(tmp_path):
    """Weight 1: the labels (a thin tube) are ignored and a teacher that says 0.9 everywhere is
    learnt; the run returns the student alone, and the teacher is not trained."""
    cases = [write_tube_case(tmp_path, f"case{i}", seed=i) for i in range(3)]
    teacher = constant_net(0.9)
    before = [w.copy() for w in teacher.get_weights()]
    result = train(
        distilled(tiny_net, lambda: teacher, 1.0), cases[:2], cases[2:], small_config(), tmp_path / "run", progress=False
    )
    student = result.model
    assert not isinstance(student, Distiller)
    assert [w.shape for w in student.get_weights()] == [w.shape for w in tiny_net().get_weights()]
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    image = np.load(cases[2].image)[None, : PATCH[0], : PATCH[1], : PATCH[2], None]
    mask = np.load(cases[2].mask)[: PATCH[0], : PATCH[1], : PATCH[2]] > 0
    prob = keras.ops.convert_to_numpy(student(image))[0, ..., 0]
    assert np.mean(prob[~mask] >= 0.5) > 0.95  # background called cord, as the teacher says
    # the same run on the labels alone learns the tube instead
    plain = train(tiny_net, cases[:2], cases[2:], small_config(), tmp_path / "plain", progress=False).model
    plain_prob = keras.ops.convert_to_numpy(plain(image))[0, ..., 0]
    assert np.mean(plain_prob[~mask] >= 0.5) < 0.2


def identity_net(shape=PATCH) -> keras.Model:
    """A network whose probability is ``sigmoid(x)``: what it says depends on what it sees."""
    inputs = keras.Input((*shape, 1))
    head = keras.layers.Conv3D(1, 1, activation="sigmoid", kernel_initializer="ones", bias_initializer="zeros")
    return keras.Model(inputs, head(inputs))


def test_a_clean_teacher_sees_the_view_that_the_target_carries():
    distiller = Distiller(tiny_net(), identity_net(), weight=0.5, clean_view=True)
    distiller.compile(optimizer="adam", loss=get_loss("dice_bce"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *PATCH, 1)).astype(np.float32)
    clean = rng.normal(size=(2, *PATCH, 1)).astype(np.float32)
    label = (rng.random((2, *PATCH, 1)) > 0.7).astype(np.float32)
    target = keras.ops.convert_to_numpy(distiller.soft_target(x, np.concatenate([label, clean], axis=-1)))
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(target, 0.5 * label + 0.5 * sigmoid(clean), atol=1e-5)
    # a one-channel target (validation): the teacher sees the student's patch
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller.soft_target(x, label)), 0.5 * label + 0.5 * sigmoid(x), atol=1e-5
    )


def test_a_clean_view_distillation_trains_and_scores_on_the_label(tmp_path):
    """The trainer asks the dataset for the clean view when the distiller wants it: two-channel
    targets reach the loss, and the metrics see the label (a Dice in [0, 1] on the tube)."""
    cases = [write_tube_case(tmp_path, f"case{i}", seed=i) for i in range(3)]
    result = train(
        distilled(tiny_net, lambda: constant_net(0.9), 0.3, clean_view=True), cases[:2], cases[2:], small_config(),
        tmp_path / "run", progress=False,
    )  # fmt: skip
    assert not isinstance(result.model, Distiller)
    assert all(0.0 <= d <= 1.0 for d in result.history["dice"])
    assert result.best_val_dice > 0.5  # mostly the label (0.7), the tube learnt
