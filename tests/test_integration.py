"""End to end on the real MNIST: train the default recipe for one epoch, save, reload, predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_mnist

import digitrec
from digitrec.evaluate import predict_logits

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
