"""Device, precision, thread and seed choices, made once by the caller and passed down."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from digitrec.errors import ConfigError

__all__ = [
    "Precision",
    "resolve_device",
    "cpu_supports_bf16",
    "resolve_precision",
    "autocast",
    "seed_everything",
]

Precision = Literal["auto", "fp32", "bf16"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device, validated."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {name!r}") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {str(name)!r} (use auto, cpu or cuda)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r} does not exist ({torch.cuda.device_count()} GPU(s))")
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16).

    Without them bf16 is emulated and slower than fp32, so "auto" precision stays fp32.
    """
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """Pick the compute precision: bf16 autocast where the hardware runs it natively."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"invalid precision {precision!r} (use auto, fp32 or bf16)")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        # Native bf16 tensor cores start with Ampere (compute capability 8.0); older GPUs
        # emulate it, slower than fp32 (torch's is_bf16_supported() counts emulation).
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` ("bf16" or "fp32") on ``device``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
