"""Tests for digitrec.models.keras_import: .keras files built with h5py and JSON (no TensorFlow) convert exactly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from digitrec.errors import ModelFileError
from digitrec.models.checkpoint import load_model

h5py = pytest.importorskip("h5py")
from digitrec.models.keras_import import import_keras  # noqa: E402

C1, C2, HIDDEN = 4, 6, 16  # a small notebook-shaped stack, so the reference forward pass stays quick


def _layer(kind: str, name: str, **config) -> dict:
    return {"module": "keras.layers", "class_name": kind, "config": {"name": name, **config}}


def _config(*, extra_layer: str | None = None, activation: str = "softmax") -> dict:
    layers = [
        _layer("InputLayer", "input_layer", batch_shape=[None, 28, 28, 1]),
        _layer("Conv2D", "conv2d", filters=C1, kernel_size=[3, 3], strides=[1, 1], padding="valid", activation="relu"),
        _layer("MaxPooling2D", "max_pooling2d", pool_size=[2, 2]),
        _layer("Conv2D", "conv2d_1", filters=C2, kernel_size=[3, 3], strides=[1, 1], padding="valid",
               activation="relu"),
        _layer("MaxPooling2D", "max_pooling2d_1", pool_size=[2, 2]),
        _layer("Flatten", "flatten"),
        _layer("Dense", "dense", units=HIDDEN, activation="relu"),
        _layer("Dense", "dense_1", units=10, activation=activation),
    ]
    if extra_layer:
        layers.insert(6, _layer(extra_layer, "odd"))
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def _weights(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    return {
        "conv2d": [rng.normal(0, 0.5, (3, 3, 1, C1)), rng.normal(0, 0.1, C1)],
        "conv2d_1": [rng.normal(0, 0.3, (3, 3, C1, C2)), rng.normal(0, 0.1, C2)],
        "dense": [rng.normal(0, 0.2, (5 * 5 * C2, HIDDEN)), rng.normal(0, 0.1, HIDDEN)],
        "dense_1": [rng.normal(0, 0.3, (HIDDEN, 10)), rng.normal(0, 0.1, 10)],
    }


def _write_keras(path: Path, config: dict, weights: dict[str, list[np.ndarray]]) -> Path:
    """A Keras 3 archive laid out as `model.save("x.keras")` writes it: config.json and model.weights.h5."""
    h5_path = path.with_suffix(".h5")
    with h5py.File(h5_path, "w") as h5:
        for name, arrays in weights.items():
            for i, array in enumerate(arrays):
                h5[f"layers/{name}/vars/{i}"] = array.astype(np.float32)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.x"}))
        archive.write(h5_path, "model.weights.h5")
    return path


def _keras_forward(x: np.ndarray, w: dict[str, list[np.ndarray]]) -> np.ndarray:
    """The stack as Keras computes it, channels-last, in NumPy: (N, 28, 28, 1) in [0, 1] -> probabilities."""
    def conv(a, kernel, bias):  # valid 3x3, stride 1: (N, H, W, C) -> (N, H-2, W-2, F)
        windows = np.lib.stride_tricks.sliding_window_view(a, (3, 3), axis=(1, 2))  # (N, H-2, W-2, C, 3, 3)
        return np.einsum("nhwcij,ijcf->nhwf", windows, kernel) + bias

    def pool(a):  # 2x2, floor
        n, h, wd, c = a.shape
        a = a[:, : h // 2 * 2, : wd // 2 * 2]
        return a.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))

    a = pool(np.maximum(conv(x, *w["conv2d"]), 0))
    a = pool(np.maximum(conv(a, *w["conv2d_1"]), 0))
    a = np.maximum(a.reshape(len(a), -1) @ w["dense"][0] + w["dense"][1], 0)  # Flatten walks (H, W, C)
    z = a @ w["dense_1"][0] + w["dense_1"][1]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_notebook_stack_converts_to_seed_with_the_same_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = _weights(rng)
    source = _write_keras(tmp_path / "nb.keras", _config(), weights)
    mf = load_model(import_keras(source, tmp_path / "nb.safetensors"))
    assert mf.arch == "seed" and mf.model_config["conv1_channels"] == C1 and mf.model_config["hidden"] == HIDDEN
    assert (mf.normalization.mean, mf.normalization.std) == (0.0, 1.0)  # the notebook scales by 1/255 only
    x = rng.random((4, 28, 28, 1)).astype(np.float32)
    with torch.no_grad():
        got = mf.model(torch.from_numpy(x).permute(0, 3, 1, 2)).softmax(dim=1).numpy()
    np.testing.assert_allclose(got, _keras_forward(x.astype(np.float64), weights), atol=1e-5)
    assert mf.metadata["imported_from"]["format"] == "keras"


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b"not a zip"), "not a zip"),
    (lambda p: _write_keras(p, _config(extra_layer="Lambda"), _weights(np.random.default_rng(1))), "Lambda"),
    (lambda p: _write_keras(p, _config(activation="tanh"), _weights(np.random.default_rng(1))), "activation"),
    (lambda p: _write_keras(p, _config(), {**_weights(np.random.default_rng(1)),
                                           "dense": [np.zeros((7, HIDDEN)), np.zeros(HIDDEN)]}), "shape"),
    (lambda p: _write_keras(p, _config(), {k: v for k, v in _weights(np.random.default_rng(1)).items()
                                           if k != "dense_1"}), "missing"),
])
def test_bad_archives_are_one_line_errors_and_write_nothing(tmp_path: Path, make, needle: str) -> None:
    source = tmp_path / "bad.keras"
    make(source)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ModelFileError, match=needle) as info:
        import_keras(source, out)
    assert "\n" not in str(info.value) and not out.exists()


def test_cli_import_keras(tmp_path: Path) -> None:
    import subprocess
    import sys

    source = _write_keras(tmp_path / "nb.keras", _config(), _weights(np.random.default_rng(2)))
    proc = subprocess.run([sys.executable, "-m", "digitrec", "import-keras", str(source), "--out",
                           str(tmp_path / "m.safetensors"), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["arch"] == "seed" and (tmp_path / "m.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "digitrec", "import-keras", str(tmp_path / "none.keras")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
