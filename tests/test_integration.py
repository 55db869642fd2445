"""End to end on the real MNIST: train the default recipe for one epoch, save, reload, predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_mnist

import digitrec
from digitrec.infer.evaluate import predict_logits

pytestmark = [
    pytest.mark.slow,
    requires_mnist,
]


def test_one_epoch_default_recipe_end_to_end(tmp_path, real_mnist):
    result = digitrec.train(epochs=1, seed=0)
    assert not result.interrupted and result.epochs_completed == 1
    assert result.dataset["train_size"] == 55_000 and result.dataset["test_size"] == 10_000
    assert result.test is not None and result.test.accuracy >= 0.98
    assert result.val is not None and result.val.accuracy >= 0.97

    path = result.save(tmp_path / "one-epoch.safetensors")
    rec = digitrec.load(path)
    assert rec.metadata["metrics"]["test_accuracy"] == result.test.accuracy

    images = real_mnist.test_images[:1000]
    expected = predict_logits(result.model, torch.from_numpy(images), device=torch.device("cpu"),
                              precision="fp32").argmax(dim=1).numpy()
    reloaded = np.array([p.digit for p in rec.predict(images)])
    np.testing.assert_array_equal(reloaded, expected)
    assert (reloaded == real_mnist.test_labels[:1000]).mean() >= 0.97


def test_best_preset_runs_and_learns_on_a_subset(tmp_path, real_mnist):
    # The full `best` recipe (VGG + augmentation + one-cycle + EMA + selection + checkpoints)
    # for two short epochs on 3,000 real images: checks it runs end to end and learns (chance
    # is 10%), not the final accuracy. fit() on a subset skips the 10,000-image test pass.
    from digitrec.cfg.presets import preset_config
    from digitrec.train.engine import fit

    config = preset_config("best", epochs=2)
    x, y = real_mnist.train_images, real_mnist.train_labels
    result = fit(config, x[:3000], y[:3000], device=torch.device("cpu"), val_images=x[-500:],
                 val_labels=y[-500:], checkpoint=tmp_path / "run.ckpt")
    assert result.best_epoch in (1, 2) and result.epochs_completed == 2
    assert result.val is not None and result.val.accuracy >= 0.7
    rec = digitrec.load(result.save(tmp_path / "best-short.safetensors"))
    assert rec.model_file.arch == "vgg"
    assert rec.metadata["train_config"]["ema_decay"] == config.ema_decay
    predicted = np.array([p.digit for p in rec.predict(x[-500:])])
    # Reloaded and run through the inference API (fp32, maybe ONNX) vs the bf16 validation pass.
    assert (predicted == result.val.predictions).mean() >= 0.98
