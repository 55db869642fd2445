"""Tests for digitrec.runtime: device, precision, autocast and seeding choices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from digitrec import runtime
from digitrec.errors import ConfigError
from digitrec.runtime import (
    autocast,
    resolve_device,
    resolve_precision,
    seed_everything,
)

CPU = torch.device("cpu")


def test_auto_device_is_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    assert resolve_device() == CPU


def test_auto_device_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cpu_device():
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_an_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cpu:x", "meta"])
def test_invalid_or_unsupported_device(name):
    with pytest.raises(ConfigError, match=r"(invalid|unsupported) device"):
        resolve_device(name)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        resolve_device("tpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_kept(precision):
    assert resolve_precision(precision, CPU) == precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == expected


def test_auto_precision_here():
    assert resolve_precision("auto", CPU) == ("bf16" if runtime.cpu_supports_bf16() else "fp32")


@pytest.mark.parametrize("precision", ["fp16", "float32", "", "BF16"])
def test_invalid_precision(precision):
    with pytest.raises(ConfigError, match="invalid precision"):
        resolve_precision(precision, CPU)


def test_autocast_bf16_and_fp32():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32


def test_seed_everything_is_reproducible():
    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    seed_everything(124)
    assert not torch.equal(torch.rand(3), first[2])


def test_seed_everything_accepts_large_seeds():
    seed_everything(2**40 + 5)  # NumPy's legacy seeding needs < 2**32
    first = torch.rand(3)
    seed_everything(2**40 + 5)
    assert torch.equal(torch.rand(3), first)


def test_resolve_device_accepts_and_checks_torch_devices():
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        for dev in (torch.device("cuda"), "cuda:5"):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(dev)
