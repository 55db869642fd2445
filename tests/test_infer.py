"""Tests for digitrec.infer.backends: the two inference backends agree, and the ONNX export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from digitrec.errors import ConfigError
from digitrec.infer.backends import InferenceEngine, ProbabilityModel, export_onnx, onnxruntime_available
from digitrec.infer.recogniser import load
from digitrec.models.checkpoint import load_model, save_model
from digitrec.models.registry import create_model

CPU = torch.device("cpu")
needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="needs the onnx extra (onnxruntime)")


@pytest.fixture
def hot_model_file(tmp_path):
    """A seeded untrained seed-CNN with a temperature, so the temperature path is exercised."""
    torch.manual_seed(0)
    model = create_model("seed").eval()
    return load_model(save_model(tmp_path / "hot.safetensors", model, "seed", {}, extra={"temperature": 2.5}))


@pytest.fixture
def images():
    return np.random.default_rng(0).random((130, 28, 28), dtype=np.float32)  # > one chunk of 100


def reference_probabilities(model_file, images: np.ndarray) -> torch.Tensor:
    """The inference function written out by hand: normalise, model, softmax(logits / T)."""
    norm = model_file.normalization
    x = (torch.from_numpy(images).unsqueeze(1) - norm.mean) / norm.std
    with torch.no_grad():
        return (model_file.model(x) / model_file.temperature).softmax(dim=1)


def test_torch_backend_matches_reference(hot_model_file, images):
    engine = InferenceEngine(hot_model_file, CPU, backend="torch")
    assert engine.backend == "torch"
    got = engine.probabilities(images)
    assert got.shape == (130, 10) and got.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(got), reference_probabilities(hot_model_file, images),
                               atol=1e-5, rtol=1e-4)


@needs_ort
def test_onnx_backend_matches_torch(hot_model_file, images):
    onnx = InferenceEngine(hot_model_file, CPU, backend="onnx")
    ref = reference_probabilities(hot_model_file, images)
    torch.testing.assert_close(torch.from_numpy(onnx.probabilities(images)), ref, atol=1e-5, rtol=1e-4)
    # The one-thread session for a few images and the batch session give the same answers.
    torch.testing.assert_close(torch.from_numpy(onnx.probabilities(images[:3])), ref[:3], atol=1e-5, rtol=1e-4)


@needs_ort
def test_onnx_backend_uint8_equals_float(hot_model_file):
    u8 = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    engine = InferenceEngine(hot_model_file, CPU, backend="onnx")
    np.testing.assert_allclose(engine.probabilities(u8), engine.probabilities(u8.astype(np.float32) / 255))


def test_auto_picks_onnx_only_where_it_applies(hot_model_file):
    auto = InferenceEngine(hot_model_file, CPU, backend="auto")
    assert auto.backend == ("onnx" if onnxruntime_available() else "torch")
    # bf16 has no ONNX Runtime path: auto falls back, an explicit request is refused.
    assert InferenceEngine(hot_model_file, CPU, precision="bf16", backend="auto").backend == "torch"
    with pytest.raises(ConfigError, match="fp32"):
        InferenceEngine(hot_model_file, CPU, precision="bf16", backend="onnx")
    with pytest.raises(ConfigError, match="invalid backend"):
        InferenceEngine(hot_model_file, CPU, backend="tensorrt")


def test_onnx_backend_without_onnxruntime_is_a_clear_error(hot_model_file, monkeypatch):
    monkeypatch.setattr("digitrec.infer.onnx.onnxruntime_available", lambda: False)
    assert InferenceEngine(hot_model_file, CPU, backend="auto").backend == "torch"
    with pytest.raises(ConfigError, match=r"pip install 'digitrec\[onnx\]'"):
        InferenceEngine(hot_model_file, CPU, backend="onnx")


def test_recogniser_backends_agree(tiny_model_file, digit_image):
    torch_rec = load(tiny_model_file, backend="torch")
    assert torch_rec.backend == "torch"
    auto_rec = load(tiny_model_file)
    a, b = torch_rec.predict(digit_image), auto_rec.predict(digit_image)
    assert a.digit == b.digit
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_probability_model_rows_sum_to_one(hot_model_file, images):
    wrapper = ProbabilityModel(hot_model_file.model, hot_model_file.normalization, hot_model_file.temperature)
    with torch.no_grad():
        probs = wrapper(torch.from_numpy(images[:4]))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4))


@needs_ort
def test_export_onnx_file_runs_in_onnxruntime(hot_model_file, images, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    export_onnx(hot_model_file, out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    probs = session.run(["probabilities"], {"images": images})[0]
    np.testing.assert_allclose(probs, reference_probabilities(hot_model_file, images).numpy(), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hot.safetensors", "model.onnx"]  # no temp left


@needs_ort
def test_cli_export(tmp_path):
    out = tmp_path / "seed.onnx"
    proc = subprocess.run([sys.executable, "-m", "digitrec", "export", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["format"] == "onnx" and record["bytes"] == out.stat().st_size > 100_000
    bad = subprocess.run([sys.executable, "-m", "digitrec", "export", "--out", str(tmp_path / "x.txt")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"digitrec: error: {tmp_path / 'x.txt'}: the output must end in .onnx"
