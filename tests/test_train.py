"""Tests for digitrec.train.engine: the recipe's validation, a tiny dry run, determinism and Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch

import digitrec
from digitrec.data.mnist import MNIST
from digitrec.errors import ConfigError
from digitrec.models.checkpoint import load_model
from digitrec.train.engine import EpochRecord, TrainConfig, fit, split_train_val, train
from digitrec.train.optim import lr_at

CPU = torch.device("cpu")
FAST = {"epochs": 2, "batch_size": 64, "val_size": 64, "precision": "fp32"}


@pytest.fixture(scope="module")
def tiny_mnist() -> MNIST:
    """256 random training and 40 random test images with labels, as an in-memory MNIST."""
    rng = np.random.default_rng(0)
    return MNIST(
        train_images=rng.integers(0, 256, (256, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 256).astype(np.int64),
        test_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 40).astype(np.int64),
        directory=None,  # type: ignore[arg-type]
        sha256={"train-images-idx3-ubyte": "made-up"},
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_mnist):
    """One two-epoch training run on the tiny set, shared by the tests that only read it."""
    return train(data=tiny_mnist, device="cpu", **FAST)


def fit_tiny(tiny_mnist, callback=None, **overrides):
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, "precision": "fp32", **overrides})
    return fit(config, tiny_mnist.train_images[:192], tiny_mnist.train_labels[:192], device=CPU,
               callback=callback)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- TrainConfig ----------------------------------------------------------------------------------


def test_default_recipe_is_the_notebook():
    config = TrainConfig()
    assert (config.arch, config.epochs, config.batch_size, config.lr) == ("seed", 10, 100, 1e-3)
    config.validate()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("epochs", -3, "epochs must be >= 1"),
        ("batch_size", 0, "batch size must be >= 1"),
        ("lr", 0.0, "learning rate must be a positive number"),
        ("lr", -1e-3, "learning rate must be a positive number"),
        ("lr", float("nan"), "learning rate must be a positive number"),
        ("lr", float("inf"), "learning rate must be a positive number"),
        ("val_size", -1, "val size must be >= 0"),
        ("eval_batch_size", 0, "eval batch size must be >= 1"),
        ("limit", -1, "limit must be >= 0"),
        ("precision", "fp16", "invalid precision 'fp16'"),
        ("arch", "resnet", "unknown architecture 'resnet'"),
    ],
)
def test_validate_rejects(field, value, message):
    config = dataclasses.replace(TrainConfig(), **{field: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_to_dict_is_json_ready():
    config = TrainConfig(model_config={"hidden": 64}, epochs=3)
    d = config.to_dict()
    assert d["model_config"] == {"hidden": 64} and d["epochs"] == 3
    assert json.loads(json.dumps(d)) == d
    assert TrainConfig(**d) == dataclasses.replace(config, model_config={"hidden": 64})


def test_split_train_val_is_seeded_and_disjoint():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1)
    labels = np.arange(20)
    tx, ty, vx, vy = split_train_val(images, labels, 5, seed=1)
    assert len(tx) == 15 and len(vx) == 5
    assert sorted(np.concatenate([ty, vy]).tolist()) == list(range(20))
    np.testing.assert_array_equal(tx[:, 0, 0], ty)  # images and labels stay paired
    again = split_train_val(images, labels, 5, seed=1)
    np.testing.assert_array_equal(again[3], vy)
    assert not np.array_equal(split_train_val(images, labels, 5, seed=2)[3], vy)
    with pytest.raises(ConfigError, match="leaves no training images"):
        split_train_val(images, labels, 20, seed=0)


# --- train() --------------------------------------------------------------------------------------


def test_tiny_dry_run(tiny_run, tiny_mnist):
    result = tiny_run
    assert len(result.history) == 2 and result.epochs_completed == 2
    assert [r.epoch for r in result.history] == [1, 2]
    for record in result.history:
        assert isinstance(record, EpochRecord)
        assert math.isfinite(record.loss) and record.loss > 0
        assert 0.0 <= record.accuracy <= 1.0
        assert record.val_loss is not None and math.isfinite(record.val_loss)
        assert record.val_accuracy is not None and 0.0 <= record.val_accuracy <= 1.0
        assert record.images_per_s > 0 and record.seconds > 0
    assert not result.interrupted
    assert result.device == "cpu" and result.precision == "fp32"
    assert not result.model.training
    assert result.val is not None and result.val.confusion.sum() == 64
    assert result.test is not None and result.test.confusion.sum() == 40
    assert result.dataset == {
        "name": "mnist", "train_size": 192, "val_size": 64, "test_size": 40,
        "sha256": {"train-images-idx3-ubyte": "made-up"},
    }
    m = result.metrics()
    assert m["epochs_completed"] == 2
    assert m["train_loss"] == result.history[-1].loss
    assert m["val_accuracy"] == result.val.accuracy and m["test_accuracy"] == result.test.accuracy


def test_limit_uses_first_images(tiny_mnist):
    result = train(data=tiny_mnist, device="cpu", epochs=1, batch_size=64, val_size=20, limit=100,
                   precision="fp32")
    assert result.dataset["train_size"] == 80 and result.dataset["val_size"] == 20


def test_train_unknown_override_is_config_error(tiny_mnist):
    with pytest.raises(ConfigError, match="learning_rate"):
        train(data=tiny_mnist, device="cpu", learning_rate=0.1)


@pytest.mark.parametrize("overrides", [{"epochs": 0}, {"lr": -1.0}, {"precision": "half"}])
def test_train_invalid_override_is_config_error(tiny_mnist, overrides):
    with pytest.raises(ConfigError):
        train(data=tiny_mnist, device="cpu", **overrides)


@pytest.mark.parametrize("val_size", [256, 1000])
def test_val_size_too_large_is_config_error(tiny_mnist, val_size):
    with pytest.raises(ConfigError, match="leaves no training images"):
        train(data=tiny_mnist, device="cpu", val_size=val_size, precision="fp32")


def test_train_with_config_object_and_overrides(tiny_mnist):
    config = TrainConfig(epochs=5, batch_size=64, val_size=0, precision="fp32")
    result = train(config, data=tiny_mnist, device=CPU, epochs=1)
    assert result.config.epochs == 1 and config.epochs == 5
    assert result.val is None and result.history[0].val_loss is None
    assert result.dataset["train_size"] == 256


def test_train_result_save_round_trip(tiny_run, tmp_path):
    path = tiny_run.save(tmp_path / "run.safetensors")
    loaded = load_model(path)
    meta = loaded.metadata
    assert meta["train_config"] == tiny_run.config.to_dict()
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["history"][0]["loss"] == tiny_run.history[0].loss
    assert meta["metrics"] == tiny_run.metrics()
    assert meta["interrupted"] is False
    assert meta["dataset"]["train_size"] == 192
    assert meta["trained_on"] == {"device": "cpu", "precision": "fp32"}
    assert loaded.model_config == dataclasses.asdict(tiny_run.model.config)
    assert states_equal(loaded.model, tiny_run.model)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():  # close, not equal: the trained model runs channels_last kernels
        torch.testing.assert_close(loaded.model(x), tiny_run.model(x))


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_weights_different_seed_different(tiny_mnist):
    a = fit_tiny(tiny_mnist, seed=3)
    b = fit_tiny(tiny_mnist, seed=3)
    c = fit_tiny(tiny_mnist, seed=4)
    assert states_equal(a.model, b.model)
    assert a.history[0].loss == b.history[0].loss
    assert not states_equal(a.model, c.model)


def test_fit_with_other_model_config(tiny_mnist):
    result = fit_tiny(tiny_mnist, model_config={"hidden": 16})
    assert result.model.classifier[0].out_features == 16


def test_bf16_fit_runs(tiny_mnist):
    result = fit_tiny(tiny_mnist, precision="bf16")
    assert result.precision == "bf16"
    assert math.isfinite(result.history[0].loss)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast only


# --- callbacks and Ctrl-C -------------------------------------------------------------------------


class Recorder:
    def __init__(self, interrupt_in_epoch: int | None = None) -> None:
        self.events: list[tuple] = []
        self.interrupt_in_epoch = interrupt_in_epoch
        self.epoch = 0

    def on_epoch_start(self, epoch, epochs, steps):
        self.epoch = epoch
        self.events.append(("start", epoch, epochs, steps))

    def on_step(self, step, loss, accuracy, images_per_s):
        assert math.isfinite(loss) and 0 <= accuracy <= 1 and images_per_s > 0
        self.events.append(("step", self.epoch, step))
        if self.epoch == self.interrupt_in_epoch:
            raise KeyboardInterrupt

    def on_epoch_end(self, record):
        self.events.append(("end", record.epoch))


def test_callback_sequence(tiny_mnist):
    rec = Recorder()
    fit_tiny(tiny_mnist, rec, epochs=2)  # 192 images / 64 = 3 steps, reported at the last
    assert rec.events == [
        ("start", 1, 2, 3), ("step", 1, 3), ("end", 1),
        ("start", 2, 2, 3), ("step", 2, 3), ("end", 2),
    ]


def test_ctrl_c_keeps_last_completed_epoch(tiny_mnist, tmp_path):
    rec = Recorder(interrupt_in_epoch=2)
    result = fit_tiny(tiny_mnist, rec, epochs=3, seed=7)
    assert result.interrupted
    assert len(result.history) == 1 and result.epochs_completed == 1
    assert ("end", 2) not in rec.events and ("start", 3, 3, 3) not in rec.events
    assert not result.model.training
    # Training is deterministic: the weights must be those of an uninterrupted 1-epoch run
    # (epoch 2's steps all ran before the interrupt, so they had to be rolled back).
    one_epoch = fit_tiny(tiny_mnist, epochs=1, seed=7)
    assert states_equal(result.model, one_epoch.model)
    saved = load_model(result.save(tmp_path / "interrupted.safetensors"))
    assert saved.metadata["interrupted"] is True
    assert saved.metadata["metrics"]["epochs_completed"] == 1


def test_ctrl_c_in_first_epoch_returns_initial_weights(tiny_mnist):
    result = fit_tiny(tiny_mnist, Recorder(interrupt_in_epoch=1), epochs=2, seed=5)
    assert result.interrupted and result.history == []
    torch.manual_seed(5)
    fresh = digitrec.create_model("seed")
    assert states_equal(result.model, fresh)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 1.5, "epochs must be an integer"),
        ("batch_size", 50.0, "batch_size must be an integer"),
        ("limit", True, "limit must be an integer"),
        ("seed", -1, "seed must be >= 0"),
        ("seed", 2**70, "seed must be < 2\\*\\*63"),
        ("lr", "0.1", "learning rate must be a positive number"),
        ("model_config", {"num_classes": 2}, r"expected \(1, 10\)"),
        ("num_classes", 1, "num_classes must be an integer >= 2"),
        ("model_config", {"hidden": -1}, "cannot build"),
    ],
)
def test_validate_rejects_wrong_types_and_models(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value}).validate()


def test_callbacks_may_implement_only_some_methods(tiny_mnist):
    ends = []

    class OnlyEpochEnd:
        def on_epoch_end(self, record):
            ends.append(record.epoch)

    fit_tiny(tiny_mnist, callback=OnlyEpochEnd(), epochs=2)
    assert ends == [1, 2]


# --- accuracy features: schedules, optimisers, augmentation, EMA, selection ------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "rmsprop", "invalid optimizer 'rmsprop'"),
        ("schedule", "step", "invalid schedule 'step'"),
        ("weight_decay", -0.1, "weight decay must be a number >= 0"),
        ("warmup", 1.5, r"warmup must be a number in \[0, 1\]"),
        ("label_smoothing", float("nan"), "label smoothing must be"),
        ("ema_decay", 1.0, r"ema decay must be a number in \[0, 1\)"),
        ("patience", -1, "patience must be an integer >= 0"),
        ("keep_best", 1, "keep_best must be true or false"),
        ("aug_rotate", -5.0, "augmentation rotate must be"),
        ("aug_scale", 1.0, "augmentation scale must be < 1"),
        ("aug_elastic", -1.0, "augmentation elastic must be"),
        ("aug_elastic_sigma", 0.0, "elastic sigma must be"),
    ],
)
def test_validate_rejects_accuracy_fields(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value}).validate()


def test_selection_needs_a_validation_split():
    with pytest.raises(ConfigError, match="need a validation split"):
        TrainConfig(val_size=0, keep_best=True).validate()
    with pytest.raises(ConfigError, match="need a validation split"):
        TrainConfig(val_size=0, patience=2).validate()


def test_lr_schedules():
    total = 1000
    const = TrainConfig(lr=0.01)
    assert {lr_at(const, s, total) for s in (0, 500, 999)} == {0.01}
    one = TrainConfig(lr=0.01, schedule="onecycle", warmup=0.25)
    lrs = [lr_at(one, s, total) for s in range(total)]
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert max(lrs) == pytest.approx(0.01, rel=1e-4) and 240 <= lrs.index(max(lrs)) <= 260
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:250], lrs[1:250]))  # up, then
    assert all(a >= b for a, b in zip(lrs[260:], lrs[261:]))  # down
    cos = TrainConfig(lr=0.01, schedule="cosine", warmup=0.1)
    lrs = [lr_at(cos, s, total) for s in range(total)]
    assert lrs[0] == pytest.approx(0.01 / 100) and lrs[99] == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_at(TrainConfig(lr=0.01, schedule="cosine"), 0, total) == pytest.approx(0.01)


ACCURACY_RECIPE = {"optimizer": "adamw", "weight_decay": 0.01, "schedule": "onecycle", "warmup": 0.3,
                   "label_smoothing": 0.1, "ema_decay": 0.9, "aug_rotate": 10.0, "aug_shift": 2.0,
                   "aug_scale": 0.1, "aug_shear": 5.0}


def test_accuracy_recipe_is_deterministic(tiny_mnist):
    a = fit_tiny(tiny_mnist, epochs=2, seed=3, **ACCURACY_RECIPE)
    b = fit_tiny(tiny_mnist, epochs=2, seed=3, **ACCURACY_RECIPE)
    assert states_equal(a.model, b.model)
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    plain = fit_tiny(tiny_mnist, epochs=2, seed=3)
    assert not states_equal(a.model, plain.model)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_and_schedules_train(tiny_mnist, name):
    result = fit_tiny(tiny_mnist, optimizer=name, weight_decay=1e-3, schedule="cosine", warmup=0.2,
                      lr=0.01 if name == "sgd" else 1e-3)
    assert math.isfinite(result.history[0].loss)


def test_augmentation_changes_training_but_not_the_shuffle(tiny_mnist):
    # Augmentation draws from its own generator, so the batches are the same images, warped.
    aug = fit_tiny(tiny_mnist, seed=2, aug_rotate=20.0)
    plain = fit_tiny(tiny_mnist, seed=2)
    assert not states_equal(aug.model, plain.model)
    assert aug.history[0].loss != plain.history[0].loss


def test_ema_model_is_returned_and_averages(tiny_mnist):
    torch.manual_seed(0)
    raw = fit_tiny(tiny_mnist, seed=1, epochs=2)
    ema = fit_tiny(tiny_mnist, seed=1, epochs=2, ema_decay=0.5)
    # Same training trajectory (EMA only reads the weights) but different final weights.
    assert [r.loss for r in raw.history] == [r.loss for r in ema.history]
    assert not states_equal(raw.model, ema.model)
    assert all(not p.requires_grad for p in ema.model.parameters())


def test_ema_averages_batchnorm_statistics(tiny_mnist):
    result = fit_tiny(tiny_mnist, arch="vgg", model_config={"width": 4}, ema_decay=0.9)
    bn = result.model.features[1]
    assert bn.num_batches_tracked.item() == 3  # copied from the trained model
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def fit_val(tiny_mnist, callback=None, **overrides):
    config = TrainConfig(**{"batch_size": 64, "precision": "fp32", "val_size": 64, **overrides})
    x, y = tiny_mnist.train_images, tiny_mnist.train_labels
    return fit(config, x[:192], y[:192], device=CPU, val_images=x[192:], val_labels=y[192:], callback=callback)


def test_keep_best_selects_on_validation(tiny_mnist):
    result = fit_val(tiny_mnist, epochs=4, keep_best=True, lr=0.01, seed=1)
    scores = [(r.val_accuracy, -r.val_loss) for r in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.val.accuracy == result.history[result.best_epoch - 1].val_accuracy
    assert result.metrics()["best_epoch"] == result.best_epoch
    again = fit_val(tiny_mnist, epochs=result.best_epoch, lr=0.01, seed=1)
    # A fixed-length run of best_epoch epochs ends with the same weights, unless the schedule
    # depends on the length (it is constant here).
    assert states_equal(result.model, again.model)


def test_early_stopping_after_patience(tiny_mnist, monkeypatch):
    # A score that never improves: the run stops after the first epoch plus `patience` more.
    monkeypatch.setattr(sys.modules["digitrec.train.engine"], "epoch_rank", lambda record: (0.0, 0.0))
    result = fit_val(tiny_mnist, epochs=10, patience=2)
    assert len(result.history) == 3 and result.stopped_early
    assert result.metrics()["stopped_early"] is True
    assert result.best_epoch is None  # keep_best off: the last epoch's weights


def test_defaults_turn_every_accuracy_feature_off():
    off = {"optimizer": "adam", "weight_decay": 0.0, "schedule": "constant", "label_smoothing": 0.0,
           "ema_decay": 0.0, "patience": 0, "keep_best": False, "aug_rotate": 0.0, "aug_shift": 0.0,
           "aug_scale": 0.0, "aug_shear": 0.0, "aug_elastic": 0.0}
    assert {k: getattr(TrainConfig(), k) for k in off} == off
    assert not TrainConfig().augment.enabled
# --- calibration (issue 5) --------------------------------------------------------------------------


def test_train_calibrates_on_the_validation_split(tiny_run, tiny_mnist, tmp_path):
    from digitrec.train.calibrate import calibrate_model_file, validation_split

    cal = tiny_run.calibration
    assert cal is not None and cal.count == 64 and cal.temperature > 0
    assert cal.nll_after <= cal.nll_before + 1e-6
    path = tiny_run.save(tmp_path / "run.safetensors")
    meta = load_model(path).metadata
    assert meta["temperature"] == cal.temperature and meta["calibration"]["count"] == 64
    # The stored recipe rebuilds exactly the split train() held out.
    vx, vy = validation_split(meta, tiny_mnist)
    _, _, ex, ey = split_train_val(tiny_mnist.train_images, tiny_mnist.train_labels, 64, 0)
    np.testing.assert_array_equal(vx, ex)
    np.testing.assert_array_equal(vy, ey)
    # Re-calibrating the file finds the same temperature and leaves the weights alone.
    out, again = calibrate_model_file(path, tmp_path / "again.safetensors", data=tiny_mnist)
    assert again.temperature == pytest.approx(cal.temperature, rel=1e-3)
    assert states_equal(load_model(out).model, load_model(path).model)
