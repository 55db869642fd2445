"""Tests for digitrec.infer.quantize: int8 graphs, their accuracy, their cache, the CLI and the errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_mnist
from test_cli import assert_one_line_error, leftovers, run

from digitrec.cfg.train import TrainConfig
from digitrec.errors import ConfigError
from digitrec.infer.onnx import cached_graph, onnxruntime_available, resolve_backend
from digitrec.serve.config import ServeConfig

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="needs the onnx extra (onnxruntime)")


def _op_types(graph: bytes | Path) -> set[str]:
    import onnx

    proto = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    return {node.op_type for node in proto.graph.node}


def test_int8_is_an_inference_precision_only() -> None:
    assert ServeConfig(precision="int8").precision == "int8"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="int8").validate()


def test_int8_refuses_the_torch_backend_and_the_gpu() -> None:
    with pytest.raises(ConfigError, match="onnx backend only"):
        resolve_backend("torch", "cpu", "int8")
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_backend("auto", "cuda", "int8")
    with pytest.raises(ConfigError, match="invalid precision"):
        resolve_backend("auto", "cpu", "int4")


def test_int8_without_onnxruntime_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr("digitrec.infer.onnx.onnxruntime_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs ONNX Runtime: pip install 'digitrec\[onnx\]'"):
        resolve_backend("auto", "cpu", "int8")


@needs_ort
def test_quantized_graph_runs_conv_and_dense_in_int8_and_keeps_the_answers(tiny_model_file: Path) -> None:
    from digitrec.infer.backends import onnx_graph
    from digitrec.infer.onnx import OnnxRunner
    from digitrec.infer.quantize import quantize_graph
    from digitrec.models.checkpoint import load_model

    rng = np.random.default_rng(0)
    calibration = (rng.random((200, 28, 28)) * 255).astype(np.uint8)
    images = rng.random((64, 28, 28), dtype=np.float32)
    fp32 = onnx_graph(load_model(tiny_model_file))
    int8 = quantize_graph(fp32, calibration)
    ops = _op_types(int8)
    assert {"QLinearConv", "QGemm"} <= ops and "Conv" not in ops and "Gemm" not in ops
    assert "Relu" not in ops and "DequantizeLinear" in ops  # uint8 from the first conv to the last dense layer
    assert "Softmax" in ops  # probabilities stay float
    p32, p8 = OnnxRunner(fp32).probabilities(images), OnnxRunner(int8).probabilities(images)
    assert p8.shape == (64, 10) and p8.dtype == np.float32
    np.testing.assert_allclose(p8.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(p8 - p32).max() < 0.02  # an untrained net: near-uniform answers, so compare the numbers


@needs_ort
def test_relu_after_maxpool_is_moved_before_it_with_the_same_answers(tiny_model_file: Path) -> None:
    import onnx

    from digitrec.infer.backends import onnx_graph
    from digitrec.infer.onnx import OnnxRunner
    from digitrec.infer.quantize import _relu_before_pool
    from digitrec.models.checkpoint import load_model

    graph = onnx_graph(load_model(tiny_model_file))
    proto = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    before = [n.op_type for n in proto.graph.node if n.op_type in ("MaxPool", "Relu")]
    assert before[:2] == ["MaxPool", "Relu"]  # the seed CNN pools, then applies ReLU
    moved = _relu_before_pool(proto)
    onnx.checker.check_model(moved)
    after = [n.op_type for n in moved.graph.node if n.op_type in ("MaxPool", "Relu")]
    assert after[:4] == ["Relu", "MaxPool", "Relu", "MaxPool"] and len(after) == len(before)
    images = np.random.default_rng(1).random((16, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(OnnxRunner(moved.SerializeToString()).probabilities(images),
                               OnnxRunner(graph).probabilities(images), atol=1e-6)


@needs_ort
def test_quantize_graph_refuses_no_calibration_images(tiny_model_file: Path) -> None:
    from digitrec.infer.backends import onnx_graph
    from digitrec.infer.quantize import quantize_graph
    from digitrec.models.checkpoint import load_model

    with pytest.raises(ConfigError, match="at least one image"):
        quantize_graph(onnx_graph(load_model(tiny_model_file)), np.zeros((0, 28, 28), np.uint8))


@requires_mnist
def test_calibration_reads_the_validation_split_the_model_held_out(real_mnist) -> None:
    from digitrec.data.mnist import split_train_val
    from digitrec.infer.quantize import CALIBRATION_IMAGES, calibration_images
    from digitrec.models.checkpoint import load_model

    seed = load_model("seed")
    recipe = seed.metadata["train_config"]
    got = calibration_images(seed)
    _, _, val_x, _ = split_train_val(real_mnist.train_images, real_mnist.train_labels, recipe["val_size"],
                                     recipe["seed"])
    assert got.shape == (CALIBRATION_IMAGES, 28, 28)
    np.testing.assert_array_equal(got, val_x[:CALIBRATION_IMAGES])


def test_line_readers_are_refused(tmp_path: Path) -> None:
    from digitrec.infer.quantize import int8_graph
    from digitrec.models.checkpoint import load_model
    from digitrec.read.linereader import bundled_line_reader

    with pytest.raises(ConfigError, match="int8 is for digit models"):
        int8_graph(load_model(bundled_line_reader(), task="lines", num_classes=11))


@needs_ort
@requires_mnist
# The ensemble (six VGG models) meets the bound too (bench/int8.py: 99.69% fp32, 99.70% int8), but
# took 75 s here on two loaded cores: measured by the bench, not by every test run.
@pytest.mark.parametrize("name", ["seed", pytest.param("best", marks=pytest.mark.slow)])
def test_int8_test_accuracy_is_within_a_tenth_of_a_point_of_fp32(real_mnist, name: str) -> None:
    import digitrec

    images, labels = real_mnist.test_images, real_mnist.test_labels
    fp32 = digitrec.load(name, verifier=None, line_reader=None)
    int8 = digitrec.load(name, precision="int8", verifier=None, line_reader=None)
    assert int8.precision == "int8" and int8.backend == "onnx"
    acc32 = (fp32.predict_proba(images).argmax(axis=1) == labels).mean()
    acc8 = (int8.predict_proba(images).argmax(axis=1) == labels).mean()
    assert len(labels) == 10_000
    assert abs(acc8 - acc32) <= 0.001, (acc32, acc8)
    assert acc8 > 0.985  # and it is the real model, not a broken graph that matches a broken fp32


_API_PROBE = """
import sys, digitrec
rec = digitrec.load(sys.argv[1], precision="int8", verifier=None, line_reader=None)
p = rec.predict_proba(__import__("numpy").zeros((1, 28, 28), "float32"))
print(rec.backend, rec.precision, "torch" in sys.modules, p.shape)
"""


@needs_ort
@requires_mnist
def test_a_cached_int8_graph_loads_without_torch(tmp_path: Path, tiny_model_file: Path) -> None:
    env = {**os.environ, "DIGITREC_CACHE_DIR": str(tmp_path / "cache")}

    def probe() -> str:
        proc = subprocess.run([sys.executable, "-c", _API_PROBE, str(tiny_model_file)], capture_output=True,
                              text=True, env=env, timeout=180)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert probe() == "onnx int8 True (1, 10)"  # the first load quantizes (PyTorch exports the fp32 graph)
    names = sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(names) == 2 and "-int8r" in names[0] and names[0].startswith(names[1][:32])
    assert probe() == "onnx int8 False (1, 10)"  # the cached int8 graph alone: PyTorch never imported


@needs_ort
@requires_mnist
def test_cli_export_int8_writes_the_cached_graph(tmp_path: Path, tiny_model_file: Path) -> None:
    out = tmp_path / "tiny-int8.onnx"
    proc = run("export", "--int8", "--model", str(tiny_model_file), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["precision"] == "int8" and report["bytes"] == out.stat().st_size
    assert "QLinearConv" in _op_types(out) and leftovers(tmp_path) == []
    # The same graph later processes answer with (the CLI process shares this session's cache).
    cached = cached_graph(tiny_model_file, "int8")
    assert cached is not None and cached.read_bytes() == out.read_bytes()


@needs_ort
@requires_mnist
def test_cli_predict_and_evaluate_in_int8() -> None:
    proc = run("predict", "--model", "seed", "--precision", "int8", "--mnist-index", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["digit"] == answer["true_label"] == 7
    proc = run("evaluate", "--model", "seed", "--precision", "int8", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["count"] == 10_000 and result["accuracy"] > 0.985


@needs_ort
def test_cli_int8_errors_are_one_line(tmp_path: Path) -> None:
    from digitrec.read.linereader import bundled_line_reader

    proc = run("predict", "--precision", "int8", "--backend", "torch", "--mnist-index", "0")
    assert_one_line_error(proc, 1, "int8 runs on the onnx backend only")
    out = tmp_path / "reader.onnx"
    proc = run("export", "--int8", "--model", str(bundled_line_reader()), "--out", str(out))
    assert_one_line_error(proc, 1, "not for digits")
    assert not out.exists() and leftovers(tmp_path) == []
    proc = run("serve", "--precision", "int8", "--backend", "torch", "--port", "0")
    assert_one_line_error(proc, 1, "int8 runs on the onnx backend only")
    proc = run("train", "--precision", "int8", "--epochs", "1")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr  # training keeps its own precisions


def test_cli_int8_without_onnxruntime_is_one_line(tmp_path: Path) -> None:
    # A stand-in package that fails to import, as on a machine without the onnx extra.
    blocker = tmp_path / "blocker" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no onnxruntime here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    proc = run("predict", "--precision", "int8", "--mnist-index", "0", env=env)
    assert_one_line_error(proc, 1, "int8 inference needs ONNX Runtime", "pip install 'digitrec[onnx]'")
    out = tmp_path / "seed-int8.onnx"
    proc = run("export", "--int8", "--out", str(out), env=env)
    assert_one_line_error(proc, 1, "needs ONNX Runtime")
    assert not out.exists()


@needs_ort
@requires_mnist
def test_the_server_answers_in_int8(tiny_model_file: Path, digit_png: bytes) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from digitrec.serve import create_app

    config = ServeConfig(model=str(tiny_model_file), precision="int8", verifier="none", line_reader="none")
    with TestClient(create_app(config)) as client:
        info = client.get("/v1/model").json()
        assert info["precision"] == "int8"
        r = client.post("/v1/predict", content=digit_png, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        assert len(r.json()["probabilities"]) == 10
