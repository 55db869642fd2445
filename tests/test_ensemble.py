"""Tests for ensembles: building, saving and using one file that averages several models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_mnist

import digitrec
from digitrec.data.preprocess import Normalization
from digitrec.errors import ConfigError
from digitrec.infer.evaluate import evaluate
from digitrec.models.checkpoint import load_model, read_metadata, save_model
from digitrec.models.ensemble import build_ensemble, ensemble_files, save_ensemble
from digitrec.models.registry import create_model

CPU = torch.device("cpu")


def member_file(tmp_path: Path, seed: int, arch: str = "seed", config: dict | None = None, **extra) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, config or {}).eval()
    return save_model(tmp_path / f"m{seed}.safetensors", model, arch, dict(model.config.__dict__), **extra)


@pytest.fixture
def members(tmp_path: Path) -> list[Path]:
    return [member_file(tmp_path, 1), member_file(tmp_path, 2, "vgg", {"width": 4}),
            member_file(tmp_path, 3, extra={"temperature": 2.0, "metrics": {"test_accuracy": 0.5}})]


def images(n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_ensemble_file_loads_like_a_single_model(members: list[Path], tmp_path: Path):
    out = ensemble_files([str(m) for m in members], tmp_path / "ens.safetensors")
    mf = load_model(out)
    assert mf.arch == "ensemble" and len(mf.model.members) == 3
    meta = read_metadata(out)
    assert [m["source"] for m in meta["ensemble_members"]] == [m.name for m in members]
    assert meta["ensemble_members"][2]["metrics"] == {"test_accuracy": 0.5}
    # Its probabilities are the mean of the members' (each at its own temperature).
    x = images()
    probs = []
    for path in members:
        single = load_model(path)
        from digitrec.infer.evaluate import predict_logits

        probs.append((predict_logits(single.model, torch.from_numpy(x), device=CPU) / single.temperature).softmax(1))
    expected = torch.stack(probs).mean(0)
    recogniser = digitrec.load(out)
    got = torch.tensor([p.probabilities for p in recogniser.predict_arrays(x)])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    result = evaluate(mf.model, x, np.arange(12) % 10, device=CPU)
    np.testing.assert_array_equal(result.predictions, expected.argmax(1).numpy())


def test_ensemble_needs_two_compatible_members(members: list[Path], tmp_path: Path):
    loaded = [load_model(m) for m in members]
    with pytest.raises(ConfigError, match="at least two"):
        build_ensemble(loaded[:1])
    other = member_file(tmp_path, 4, normalization=Normalization(mean=0.5, std=0.5))
    with pytest.raises(ConfigError, match="normalisation"):
        build_ensemble([loaded[0], load_model(other)])
    names = member_file(tmp_path, 5, class_names=list("abcdefghij"))
    with pytest.raises(ConfigError, match="class names"):
        build_ensemble([loaded[0], load_model(names)])


def test_ensemble_copies_weights(members: list[Path], tmp_path: Path):
    loaded = [load_model(m) for m in members]
    model = build_ensemble(loaded)
    for slot, mf in zip(model.members, loaded):
        a, b = slot.state_dict(), mf.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    path = save_ensemble(tmp_path / "e.safetensors", model, loaded, metrics={"test_accuracy": 0.25})
    assert read_metadata(path)["metrics"] == {"test_accuracy": 0.25}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())


def test_cli_ensemble_then_predict_and_summary(members: list[Path], tmp_path: Path, digit_png: bytes):
    out = tmp_path / "ens.safetensors"
    proc = cli("ensemble", str(members[0]), str(members[1]), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == str(out)
    image = tmp_path / "digit.png"
    image.write_bytes(digit_png)
    proc = cli("predict", "--model", str(out), str(image), "--json")
    assert proc.returncode == 0, proc.stderr
    assert 0 <= json.loads(proc.stdout.splitlines()[0])["digit"] <= 9
    proc = cli("summary", "--model", str(out))
    assert proc.returncode == 0 and "members.1.features.0 (Conv2d)" in proc.stdout


def test_cli_ensemble_errors_are_one_line(members: list[Path], tmp_path: Path):
    proc = cli("ensemble", str(members[0]), "--out", str(tmp_path / "e.safetensors"))
    assert proc.returncode == 1 and "at least two" in proc.stderr
    proc = cli("ensemble", str(members[0]), str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "e.st"))
    assert proc.returncode == 1 and "no such model file" in proc.stderr
    assert all("Traceback" not in p for p in (proc.stderr,))
    assert cli("ensemble", str(members[0])).returncode == 2  # --out is required


@requires_mnist
def test_cli_ensemble_test_flag_records_accuracy(members: list[Path], tmp_path: Path):
    out = tmp_path / "ens.safetensors"
    proc = cli("ensemble", str(members[0]), "seed", "--out", str(out), "--test", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert read_metadata(out)["metrics"]["test_accuracy"] == report["test_accuracy"]
    assert 0.0 <= report["test_accuracy"] <= 1.0


def test_ensemble_runs_on_every_inference_backend(members: list[Path], tmp_path: Path):
    from digitrec.infer.backends import onnxruntime_available

    out = ensemble_files([str(m) for m in members], tmp_path / "ens.safetensors")
    x = images(5)
    reference = np.array([p.probabilities for p in digitrec.load(out, backend="torch").predict_arrays(x)])
    if not onnxruntime_available():
        pytest.skip("needs the onnx extra (onnxruntime)")
    rec = digitrec.load(out, backend="onnx")
    got = np.array([p.probabilities for p in rec.predict_arrays(x)])
    np.testing.assert_allclose(got, reference, atol=1e-5)


def test_cli_ensemble_fp16_halves_the_file_and_keeps_the_answers(members: list[Path], tmp_path: Path):
    from safetensors.torch import load_file

    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    for out, flags in ((full, []), (half, ["--fp16"])):
        proc = cli("ensemble", str(members[0]), str(members[1]), "--out", str(out), *flags)
        assert proc.returncode == 0, proc.stderr
    stored = load_file(half)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert any(not t.is_floating_point() for t in stored.values())  # BN step counters stay integers
    assert half.stat().st_size < 0.6 * full.stat().st_size
    # Loading converts back to float32: the answers differ only by the float16 rounding.
    a = digitrec.load(full, backend="torch").predict_proba(images())
    b = digitrec.load(half, backend="torch").predict_proba(images())
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert load_model(half, CPU).model.members[0].features[0].weight.dtype == torch.float32
