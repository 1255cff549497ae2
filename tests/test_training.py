"""Losses, the Dice metric and the training loop (lumbo_bids.training.losses / training)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from lumbo_bids.training import trainer as training
from lumbo_bids.training.cases import TrainingCase
from lumbo_bids.training.curves import plot_history
from lumbo_bids.training.devices import accelerators, mixed_policy, select_strategy
from lumbo_bids.training.history import read_metrics
from lumbo_bids.training.losses import (
    DiceMetric,
    cldice_loss,
    dice_bce_loss,
    dice_loss,
    get_loss,
    slice_dice_loss,
    soft_skeleton,
)
from lumbo_bids.training.trainer import TrainConfig, TrainResult, train

PATCH = (16, 16, 16)


def write_tube_case(folder: Path, name: str, seed: int, shape=(32, 32, 40)) -> TrainingCase:
    """A bright tube (the mask) in noise, saved as .npy."""
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        mask[:, :, z] = (xx - 16 - 3 * np.sin(z / 9 + seed)) ** 2 + (yy - 16) ** 2 <= 9
    image = (mask * 3.0 + np.random.default_rng(seed).normal(0, 0.5, shape)).astype(np.float32)
    np.save(folder / f"{name}_image.npy", image)
    np.save(folder / f"{name}_mask.npy", mask)
    return TrainingCase(f"sub-{seed:02d}", name, folder / f"{name}_image.npy", folder / f"{name}_mask.npy")


# ----------------------------------------------------------------------------- losses
def test_dice_loss_values():
    t = np.zeros((2, 4, 4, 4, 1), np.float32)
    t[0, 1:3, 1:3, 1:3] = 1
    assert float(dice_loss(t, t, smooth=1e-6)) == pytest.approx(0.0, abs=1e-5)
    assert float(dice_loss(t, 1.0 - t, smooth=1e-6)) == pytest.approx(1.0, abs=1e-5)
    half = t * 0.5
    expected = 1 - (2 * 0.5 * 8 + 1) / (8 + 4 + 1)
    assert float(dice_loss(t, half)) == pytest.approx(expected, rel=1e-5)
    empty = np.zeros_like(t)
    assert float(dice_loss(empty, empty)) == pytest.approx(0.0)  # defined for empty patches


def test_losses_are_float32_with_float16_predictions():
    t = (np.random.default_rng(0).random((2, 8, 8, 8, 1)) > 0.7).astype(np.float32)
    p16 = keras.ops.convert_to_tensor(np.clip(t * 0.8 + 0.1, 0, 1), dtype="float16")
    for loss in (dice_loss(t, p16), dice_bce_loss(t, p16), get_loss("dice_bce", bce_weight=0.5)(t, p16)):
        assert keras.backend.standardize_dtype(loss.dtype) == "float32" and np.isfinite(float(loss))
    p = np.clip(t * 0.8 + 0.1, 0, 1)
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(dice_bce_loss(t, p, bce_weight=2.0)) == pytest.approx(float(dice_loss(t, p)) + 2 * bce, rel=1e-4)
    assert float(get_loss("dice")(t, p)) == pytest.approx(float(dice_loss(t, p)))
    with pytest.raises(ValueError):
        get_loss("focal")


def _cone_with_tail(shape=(24, 24, 64)) -> np.ndarray:
    """(1, X, Y, Z, 1): a cord of radius 5 voxels above slice 32 that tapers to radius 1 at slice 12
    (a conus), and a tail of radius 1 below it."""
    xx, yy = np.meshgrid(np.arange(shape[0]) - 12, np.arange(shape[1]) - 12, indexing="ij")
    out = np.zeros(shape, np.float32)
    for z in range(shape[2]):
        out[:, :, z] = xx**2 + yy**2 <= (1 + 4 * np.clip((z - 12) / 20, 0, 1)) ** 2
    return out[None, ..., None]


def test_the_soft_skeleton_of_a_tube_is_its_axis_along_its_whole_length():
    cord = _cone_with_tail()
    skeleton = np.asarray(soft_skeleton(cord, iterations=8))[0, ..., 0]
    xx, yy = np.meshgrid(np.arange(24) - 12, np.arange(24) - 12, indexing="ij")
    near_axis = xx**2 + yy**2 <= 2
    inner = slice(6, 58)  # away from the tube's flat ends, which thinning erodes from the end faces
    on_axis = skeleton[near_axis][:, inner].max(axis=0) > 0.5
    assert on_axis.mean() > 0.85  # on the axis nearly everywhere, the tail too (gaps where the radius steps)
    assert skeleton[~near_axis].max() < 0.5  # and nowhere else
    assert skeleton.sum() < 0.1 * cord.sum()  # a thin line, not the volume


def test_cldice_counts_a_missed_thin_end_by_its_length():
    """Missing the thin end (tail and lowest taper) costs Dice its few voxels but clDice its length."""
    cord = _cone_with_tail()
    short = cord.copy()
    short[:, :, :, :20] = 0  # the prediction stops where the tail begins
    dice_cost, cl_cost = float(dice_loss(cord, short)), float(cldice_loss(cord, short, iterations=8))
    assert dice_cost < 0.03 and cl_cost > 5 * dice_cost and float(cldice_loss(cord, cord, iterations=8)) < 0.01
    root = np.zeros_like(cord)
    root[0, 2:4, 2:4, :, 0] = 1  # a thin strand beside the cord, all false positive
    assert float(cldice_loss(cord, np.maximum(cord, root), iterations=8)) > 0.1  # precision pays for its length
    both = get_loss("dice_bce", cldice_weight=0.5)(cord, np.clip(short, 0.01, 0.99))
    alone = get_loss("dice_bce")(cord, np.clip(short, 0.01, 0.99))
    assert float(both) == pytest.approx(float(alone) + 0.5 * float(cldice_loss(cord, np.clip(short, 0.01, 0.99))), rel=1e-4)


def test_slice_dice_counts_every_slice_of_a_missed_thin_end_alike():
    """Missing the conus below slice 20 costs Dice a few voxels but the slice-wise Dice 20 of 64
    slices; a root strand below a cord that stopped in time costs its slices too."""
    cord = _cone_with_tail()
    assert float(slice_dice_loss(cord, cord)) < 0.01
    short = cord.copy()
    short[:, :, :, :20] = 0
    dice_cost, slice_cost = float(dice_loss(cord, short)), float(slice_dice_loss(cord, short))
    voxels = cord[0, :, :, :20, 0].sum(axis=(0, 1))  # each missed slice: Dice 1 / (voxels + 1), smooth 1
    assert dice_cost < 0.03 and slice_cost == pytest.approx(np.sum(1 - 1 / (voxels + 1)) / 64, rel=1e-4)
    tip = cord.copy()
    tip[:, :, :, :12] = 0  # the cord ends at its taper, slices 0-11 are empty in the truth
    root = tip.copy()
    root[0, 2:4, 2:4, :12, 0] = 1  # a strand marked below the end
    assert float(slice_dice_loss(tip, root)) == pytest.approx(12 / 64 * (1 - 1 / 5), rel=1e-4)  # 4 voxels a slice
    assert float(dice_loss(tip, root)) < 0.02
    empty = np.zeros_like(cord)
    assert float(slice_dice_loss(empty, empty)) == pytest.approx(0.0, abs=1e-6)  # nothing to score, no cost
    both = get_loss("dice_bce", slice_dice_weight=0.5)(cord, np.clip(short, 0.01, 0.99))
    alone = get_loss("dice_bce")(cord, np.clip(short, 0.01, 0.99))
    expected = float(alone) + 0.5 * float(slice_dice_loss(cord, np.clip(short, 0.01, 0.99)))
    assert float(both) == pytest.approx(expected, rel=1e-4)


def test_dice_metric_accumulates_hard_dice_over_batches():
    rng = np.random.default_rng(1)
    truth = [(rng.random((2, 6, 6, 6, 1)) > 0.6).astype(np.float32) for _ in range(3)]
    preds = [np.clip(t * 0.7 + rng.random(t.shape) * 0.5, 0, 1).astype(np.float32) for t in truth]
    metric = DiceMetric()
    for t, p in zip(truth, preds):
        metric.update_state(t, keras.ops.convert_to_tensor(p, dtype="float16"))
    tt, pp = np.concatenate(truth) > 0.5, np.concatenate(preds) >= 0.5
    expected = 2 * np.sum(tt & pp) / (tt.sum() + pp.sum())
    assert float(metric.result()) == pytest.approx(expected, rel=1e-3)
    metric.reset_state()
    metric.update_state(np.zeros((1, 3, 3, 3, 1)), np.zeros((1, 3, 3, 3, 1)))
    assert float(metric.result()) == 1.0
    assert DiceMetric.from_config(DiceMetric(threshold=0.3).get_config()).threshold == 0.3


# ----------------------------------------------------------------------------- config, strategy
def test_train_config_round_trip_and_validation():
    cfg = TrainConfig(epochs=3, patch_size=[32, 32, 16], lr_schedule="plateau", mixed_precision=False)
    assert cfg.patch_size == (32, 32, 16)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"loss": "mse"}, {"freeze": "decoder"}, {"patch_size": (16, 16)}, {"epochs": 0}, {"mixed_precision": "yes"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    assert TrainConfig(task="localisation", patch_size=(96, 96)).patch_size == (96, 96)
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"epochs": 2, "momentum": 0.9})


def test_select_strategy_matches_the_devices(caplog):
    from lumbo_bids.training import devices

    devices._SAID.discard("no GPU")  # as in a new process
    with caplog.at_level(logging.WARNING, logger="lumbo_bids.training"):
        strategy, description = select_strategy()
        select_strategy()  # a group run trains several networks: the warning is said once
        select_strategy()
    gpus, backend = accelerators(), keras.backend.backend()
    with strategy.scope():  # build, compile and fit happen inside it
        pass
    if not gpus:
        assert caplog.text.count("no GPU found, training on CPU") == 1
        assert description.startswith("CPU") and mixed_policy("auto") is None
        if backend == "tensorflow":
            import tensorflow as tf

            assert strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()  # the default
        else:
            assert description.endswith(f", {backend})")
    elif len(gpus) == 1:
        assert "1 GPU" in description and mixed_policy("auto") in ("mixed_bfloat16", "mixed_float16")
    elif backend == "tensorflow":
        assert strategy.num_replicas_in_sync == len(gpus) and "MirroredStrategy" in description
    elif backend == "jax":
        assert isinstance(strategy, keras.distribution.DataParallel) and f"over {len(gpus)} GPUs" in description


def test_mixed_precision_policy_follows_the_gpus(monkeypatch):
    """bf16 where every GPU computes it natively (compute capability 8.0+), else float16; none on CPU."""
    from lumbo_bids.training import devices

    for gpus, auto in (
        ([], None),
        ([devices.Accelerator("NVIDIA H200", (9, 0))] * 2, "mixed_bfloat16"),
        ([devices.Accelerator("Tesla V100", (7, 0))], "mixed_float16"),
        ([devices.Accelerator("NVIDIA A100", (8, 0)), devices.Accelerator("GPU", None)], "mixed_float16"),
    ):
        monkeypatch.setattr(devices, "accelerators", lambda gpus=gpus: gpus)
        assert mixed_policy("auto") == auto and mixed_policy(False) is None
        assert mixed_policy(True) == auto  # asked for without a GPU: float32 (with a warning)
    assert devices._capability("9.0") == (9, 0) and devices._capability((8, 6)) == (8, 6)
    assert devices._capability("") is None and devices._capability("sm") is None


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_cases")
    cases = [write_tube_case(folder, f"case{i}", seed=i) for i in range(4)]
    return cases[:3], cases[3:]


def tiny_net() -> keras.Model:
    inputs = keras.Input((*PATCH, 1))
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="enc0_conv1")(inputs)
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="dec0_conv1")(x)
    outputs = keras.layers.Conv3D(1, 1, activation="sigmoid", name="head_conv", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def small_config(**kw) -> TrainConfig:
    base = {
        "epochs": 3, "steps_per_epoch": 8, "batch_size": 4, "learning_rate": 1e-2, "patch_size": PATCH,
        "val_patches_per_case": 6, "early_stopping_patience": 5, "seed": 0, "loss": "dice_bce",
    }  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _tsv_epochs(path: Path) -> list[int]:
    return [int(v) for v in read_metrics(path)["epoch"]]


def test_tiny_net_learns_and_writes_its_files(split, tmp_path):
    result = train(tiny_net, *split, small_config(), tmp_path / "run", progress=False)
    assert isinstance(result, TrainResult)
    assert result.epochs_run == 3 and result.initial_epoch == 0
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.best_val_dice > 0.6 and result.best_val_dice == max(result.history["val_dice"])
    assert result.device.startswith(("CPU", "1 GPU", "MirroredStrategy"))
    tsv = tmp_path / "run" / "metrics.tsv"
    header = tsv.read_text().splitlines()[0].split("\t")
    assert header[0] == "epoch" and {"loss", "dice", "val_loss", "val_dice", "lr"} <= set(header)
    assert _tsv_epochs(tsv) == [0, 1, 2]
    lr = result.history["lr"]
    assert lr[0] > lr[-1]  # cosine decay
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "last.weights.h5").is_file() and (ckpt / "best.weights.h5").is_file()
    assert not (ckpt / "backup").exists()  # deleted by BackupAndRestore on completion
    best = tiny_net()
    best.load_weights(ckpt / "best.weights.h5")
    for a, b in zip(best.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "train_config.json").read_text())) == small_config()

    png = plot_history(tsv, tmp_path / "curves" / "training.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (400, 1000)


class Interrupt(keras.callbacks.Callback):
    """Raise at the start of an epoch, as a crash or a pre-emption would."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at_epoch:
            raise RuntimeError("interrupted")


class Probe(keras.callbacks.Callback):
    """Record the epochs run and the optimizer's step count at their start."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.iterations: list[int] = []

    def resume_best(self, best: float) -> None:  # what a progress line's "(best)" compares with
        self.resumed_best = best

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(epoch)
        self.iterations.append(int(self.model.optimizer.iterations))


def test_resume_continues_the_epoch_count(split, tmp_path, monkeypatch):
    cfg = small_config(epochs=4, steps_per_epoch=4, lr_schedule="plateau")
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        train(tiny_net, *split, cfg, out, progress=False, callbacks=[Interrupt(2)])
    assert _tsv_epochs(out / "metrics.tsv") == [0, 1]
    kept_best = max(read_metrics(out / "metrics.tsv")["val_dice"])
    assert json.loads((out / "checkpoints" / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    # a crash between the CSV row of epoch 2 and its backup would leave that row behind
    with open(out / "metrics.tsv", "a") as f:
        f.write("\t".join(["2"] + ["0.5"] * (len(read_metrics(out / "metrics.tsv")) - 1)) + "\r\n")

    streams: list[tuple[bool, int]] = []
    original = training.patch_dataset

    def spy(*args, **kwargs):
        streams.append((kwargs["training"], kwargs.get("start_epoch", 0)))
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "patch_dataset", spy)
    probe = Probe()
    result = train(tiny_net, *split, cfg, out, resume=True, progress=False, callbacks=[probe])
    assert (True, 2) in streams  # the training stream goes on with the patches of epoch 2
    assert result.initial_epoch == 2 and result.epochs_run == 4
    assert probe.epochs == [2, 3]
    assert probe.resumed_best == pytest.approx(kept_best)  # not -inf: "(best)" only for a better epoch
    assert probe.iterations[0] == 2 * cfg.steps_per_epoch  # optimizer state restored with the weights
    assert _tsv_epochs(out / "metrics.tsv") == [0, 1, 2, 3]
    assert len(result.history["val_dice"]) == 4
    assert not (out / "checkpoints" / "backup").exists()


def test_without_resume_an_old_backup_is_discarded(split, tmp_path):
    cfg = small_config(epochs=3, steps_per_epoch=2)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(tiny_net, *split, cfg, out, progress=False, callbacks=[Interrupt(1)])
    assert (out / "checkpoints" / "backup").is_dir()
    result = train(tiny_net, *split, cfg, out, resume=False, progress=False)
    assert result.initial_epoch == 0
    assert _tsv_epochs(out / "metrics.tsv") == [0, 1, 2]


def test_freeze_and_mixed_precision_request_on_cpu(split, tmp_path, caplog):
    frozen_names: list[str] = []

    def freeze_first(model: keras.Model, mode: str) -> None:
        assert mode == "encoder"
        model.get_layer("enc0_conv1").trainable = False
        frozen_names.append("enc0_conv1")

    def model_fn() -> keras.Model:
        keras.utils.set_random_seed(123)
        return tiny_net()

    before = model_fn().get_layer("enc0_conv1").get_weights()
    policy = keras.mixed_precision.global_policy().name
    mixed = mixed_policy(True)
    cfg = small_config(epochs=1, steps_per_epoch=3, freeze="encoder", mixed_precision=True, augmentation_strength=0.0)
    with caplog.at_level(logging.WARNING, logger="lumbo_bids.training"):
        result = train(model_fn, *split, cfg, tmp_path / "run", freeze_fn=freeze_first, progress=False)
    assert frozen_names == ["enc0_conv1"]
    for a, b in zip(before, result.model.get_layer("enc0_conv1").get_weights()):
        np.testing.assert_array_equal(a, b)
    trained = result.model.get_layer("dec0_conv1").get_weights()[0]
    assert not np.array_equal(model_fn().get_layer("dec0_conv1").get_weights()[0], trained)
    assert keras.mixed_precision.global_policy().name == policy  # restored after training
    if not mixed:
        assert "mixed precision requested but no GPU" in caplog.text
        assert result.model.get_layer("dec0_conv1").compute_dtype == "float32"
    else:
        assert result.model.get_layer("dec0_conv1").compute_dtype == mixed.removeprefix("mixed_")


def test_localiser_training_on_heatmap_windows(tmp_path):
    xx, yy = np.meshgrid(np.arange(64), np.arange(56), indexing="ij")
    cases = []
    for i in range(2):  # whole volumes, cord in the 9 upper slices of 12
        mask = np.zeros((64, 56, 12), np.uint8)
        mask[:, :, 3:] = (((xx - 30 - 5 * i) ** 2 + (yy - 25) ** 2) <= 9)[:, :, None]
        image = mask * 3.0 + np.random.default_rng(i).normal(0, 0.3, mask.shape)
        np.save(tmp_path / f"w{i}_image.npy", image.astype(np.float32))
        np.save(tmp_path / f"w{i}_mask.npy", mask)
        cases.append(TrainingCase(f"sub-0{i}", f"w{i}", tmp_path / f"w{i}_image.npy", tmp_path / f"w{i}_mask.npy"))

    def net2d() -> keras.Model:
        inputs = keras.Input((32, 32, 1))
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))

    cfg = small_config(task="localisation", patch_size=(32, 32), epochs=2, steps_per_epoch=3, heatmap_sigma=2.0)
    result = train(net2d, cases[:1], cases[1:], cfg, tmp_path / "loc", progress=False)
    assert _tsv_epochs(tmp_path / "loc" / "metrics.tsv") == [0, 1]
    assert all(np.isfinite(result.history["val_loss"])) and 0.0 <= result.best_val_dice <= 1.0


def test_evaluate_cases_follows_the_models_inference_settings(tmp_path):
    """Validation Dice is computed the participant level's way: the manifest's threshold matters."""
    from lumbo_bids.plan import ModelPlan
    from lumbo_bids.training.finetune import RawCase, evaluate_cases

    shape = (32, 32, 24)
    xx, yy = np.meshgrid(np.arange(32) - 15.5, np.arange(32) - 15.5, indexing="ij")
    cord = np.repeat((xx**2 + yy**2 <= 16)[..., None], shape[2], axis=2)
    image = np.where(cord, 200.0, 100.0).astype(np.float32) + np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "mask.npy", cord.astype(np.uint8))
    case = RawCase("sub-01", "img", "T2w", tmp_path / "image.npy", tmp_path / "mask.npy")
    inputs = keras.Input((None, None, None, 1))
    conv = keras.layers.Conv3D(1, 1, activation="sigmoid")  # p = sigmoid(4 z): cord (z ~ +1.7) ~ 1, rest ~ 0
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.full((1, 1, 1, 1, 1), 4.0, np.float32), np.zeros(1, np.float32)])
    plan = ModelPlan((16, 16, 16), intensity={"method": "robust"})
    assert evaluate_cases(model, [case], plan)["img"] == pytest.approx(1.0)
    never = evaluate_cases(model, [case], replace(plan, threshold=1.0))  # nothing is above 1
    assert never["img"] == pytest.approx(0.0)


def test_group_metrics_carry_the_whole_image_dice_before_and_after(tmp_path):
    """The starting point (before fine-tuning) is a row of its own; the kept epoch gets the after."""
    from lumbo_bids.training.history import with_image_dice

    tsv = tmp_path / "metrics.tsv"
    tsv.write_text("epoch\tdice\tloss\tval_dice\n0\t0.5\t0.9\t0.6\n1\t0.7\t0.5\t0.8\n2\t0.8\t0.4\t0.7\n")
    out = tmp_path / "group_metrics.tsv"
    out.write_text(with_image_dice(tsv, before=0.41, after=0.93, kept_epoch=1))
    table = read_metrics(out)
    assert table["epoch"] == [-1, 0, 1, 2]
    np.testing.assert_array_equal(np.isnan(table["val_image_dice"]), [False, True, False, True])
    assert (table["val_image_dice"][0], table["val_image_dice"][2]) == (0.41, 0.93)
    assert np.isnan(table["dice"][0]) and table["val_dice"][1:] == [0.6, 0.8, 0.7]
    png = plot_history(out, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
