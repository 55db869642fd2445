"""bench/int8.py's export of the seed model to Keras layout (no TensorFlow: a NumPy channels-last forward pass)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from digitrec.infer.backends import InferenceEngine
from digitrec.models.checkpoint import load_model

pytest.importorskip("h5py")  # test_keras_import's module needs it
from test_keras_import import _keras_forward  # noqa: E402  (the notebook stack as Keras computes it)

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def int8_bench():
    sys.path.insert(0, str(BENCH))  # for its `_common`
    try:
        spec = importlib.util.spec_from_file_location("bench_int8", BENCH / "int8.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_keras_weights_compute_the_seed_model_on_notebook_scaled_pixels(int8_bench) -> None:
    mf = load_model("seed")
    assert (mf.normalization.mean, mf.normalization.std) != (0.0, 1.0) and mf.temperature != 1.0  # both folded
    w = int8_bench.keras_weights(mf)
    assert w["k1"].shape == (3, 3, 1, 32) and w["w3"].shape == (1600, 128)
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x = images.astype(np.float64)[..., None] / 255.0  # the notebook's scaling only
    keras = _keras_forward(x, {"conv2d": [w["k1"], w["b1"]], "conv2d_1": [w["k2"], w["b2"]],
                               "dense": [w["w3"], w["b3"]], "dense_1": [w["w4"], w["b4"]]})
    ours = InferenceEngine(mf, torch.device("cpu"), "fp32", "torch").probabilities(images)
    np.testing.assert_allclose(keras, ours, atol=1e-5)
