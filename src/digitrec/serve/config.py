"""Settings of the HTTP service, in one frozen dataclass shared by the CLI, the app and its workers.

This module imports nothing from the web stack, so the CLI can build and check a config (and
say how to install the ``serve`` extra) before FastAPI is imported.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from digitrec.cfg.base import BACKENDS
from digitrec.errors import ConfigError

__all__ = ["ServeConfig", "MiB"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """How ``digitrec serve`` runs: model, address, limits and tuning."""

    model: str = "seed"  # bundled model name or model file path, loaded once per worker
    verifier: str = "bundled"  # piece verifier for /v1/read: "bundled", "none" or a file from train-verifier
    line_reader: str = "bundled"  # line reader for /v1/read: "bundled", "none" or a file from train-line-reader
    host: str = "127.0.0.1"  # address to bind; loopback by default, so nothing is exposed by accident
    port: int = 8000  # TCP port; 0 picks a free one
    workers: int = 1  # server processes (each loads the model and runs its own inference thread)
    device: str = "cpu"  # torch device for inference: cpu, cuda, cuda:N or auto
    precision: str = "fp32"  # fp32, bf16 (autocast), or auto (bf16 where the CPU/GPU runs it natively)
    backend: str = "auto"  # "torch", "onnx" (ONNX Runtime, CPU fp32, the onnx extra) or "auto" (onnx where it applies)
    max_body_bytes: int = 10 * MiB  # largest request body accepted, bytes; larger answers 413
    # No pixel limit of its own: images are decoded as the CLI decodes them, under
    # preprocess.MAX_PIXELS (larger answers 422; big JPEG photos are read at a reduced size).
    max_batch_files: int = 64  # most images in one /v1/predict/batch request
    timeout_s: float = 30.0  # whole-request deadline (reading the body included), seconds: 408 or 503 after it
    cors_origin: str | None = None  # the one origin allowed cross-origin requests; None turns CORS off
    max_batch: int = 64  # most images the inference thread runs in one forward pass (1 = no micro-batching)
    torch_threads: int = 1  # intra-op threads per worker; the event loop and decoders need the other cores
    access_log: bool = True  # one log line per request (costs throughput under load)
    log_level: str = "info"  # uvicorn log level: critical, error, warning, info, debug

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model must be a bundled model name or a model file path")
        if not self.verifier:
            raise ConfigError("verifier must be 'bundled', 'none' or a verifier file path")
        if not self.line_reader:
            raise ConfigError("line_reader must be 'bundled', 'none' or a line reader file path")
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for name in ("workers", "max_body_bytes", "max_batch_files", "max_batch", "torch_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.cors_origin is not None and not self.cors_origin.strip():
            raise ConfigError("cors_origin must be an origin such as https://example.org")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise ConfigError(f"unknown log level {self.log_level!r}")

    def to_json(self) -> str:
        """The config as JSON, to hand it to worker processes through the environment."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The inverse of :meth:`to_json`; unknown keys are a :class:`ConfigError`."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"serve config is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("serve config must be a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"serve config has unknown keys: {sorted(unknown)}")
        return cls(**data)
