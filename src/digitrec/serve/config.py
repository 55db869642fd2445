"""Settings of the HTTP service, in one frozen dataclass shared by the CLI, the app and its workers.

This module imports nothing from the web stack, so the CLI can build and check a config (and
say how to install the ``serve`` extra) before FastAPI is imported.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from digitrec.cfg.base import BACKENDS, INFER_PRECISIONS, option
from digitrec.errors import ConfigError

__all__ = ["ServeConfig", "MiB", "usable_cores", "resolve_parallelism"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """How ``digitrec serve`` runs: model, address, limits and tuning."""

    model: str = option("seed", "bundled model name or model file path, loaded once per worker")
    verifier: str = option("bundled", "piece verifier for /v1/read: 'bundled', 'none' or a file from "
                           "'digitrec train-verifier'")
    line_reader: str = option("bundled", "line reader for /v1/read: 'bundled', 'none' or a file from "
                              "'digitrec train-line-reader' or 'digitrec finetune'")
    host: str = option("127.0.0.1", "address to bind; loopback by default, so nothing is exposed by accident "
                       "(0.0.0.0 exposes it)")
    port: int = option(8000, "TCP port; 0 picks a free one", low=0, high=65535)
    workers: int = option(0, "server processes, each loading the model with its own inference thread; 0 = one "
                          "per usable core", low=0)
    device: str = option("cpu", "torch device for inference: cpu, cuda, cuda:N or auto")
    precision: str = option("fp32", "inference precision; bf16 autocast speeds up batches on CPUs with native bf16; "
                            "int8 runs the model statically quantized by ONNX Runtime (CPU, the onnx extra; "
                            "calibrated on MNIST validation images, quantized once and cached)",
                            choices=INFER_PRECISIONS)
    backend: str = option("auto", "inference backend: torch, onnx (ONNX Runtime, CPU fp32, the onnx extra) or auto "
                          "(onnx where it applies)", choices=BACKENDS)
    max_body_bytes: int = option(10 * MiB, "largest request body accepted, bytes; larger answers 413", low=1,
                                 flag=False)
    # No pixel limit of its own: images are decoded as the CLI decodes them, under
    # digitrec.data.decode.MAX_PIXELS (larger answers 422; big JPEG photos are read at a reduced size).
    max_batch_files: int = option(64, "most images in one /v1/predict/batch request", low=1, flag=False)
    timeout_s: float = option(30.0, "deadline for a whole request (reading the body included), seconds: 408 or "
                              "503 after it", above=0, name="--timeout")
    cors_origin: str | None = option(None, "the one origin allowed cross-origin requests (default: CORS off)")
    max_batch: int = option(64, "most images one forward pass runs when requests are batched together; 1 turns "
                            "micro-batching off", low=1)
    torch_threads: int = option(0, "PyTorch threads per worker; 0 = usable cores / workers, at least 1", low=0)
    access_log: bool = option(True, "one log line per request (costs throughput under load)")
    log_level: str = option("info", "uvicorn log level: critical, error, warning, info, debug", flag=False)

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
        # (field, smallest value): 0 workers or threads means "work it out from the cores".
        for name, low in (("workers", 0), ("torch_threads", 0), ("max_body_bytes", 1), ("max_batch_files", 1),
                          ("max_batch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                what = "a positive integer" + (" or 0 (automatic)" if low == 0 else "")
                raise ConfigError(f"{name} must be {what}, got {value!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.cors_origin is not None and not self.cors_origin.strip():
            raise ConfigError("cors_origin must be an origin such as https://example.org")
        if self.precision not in INFER_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(INFER_PRECISIONS)}, got {self.precision!r}")
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


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (taskset, containers), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_parallelism(config: ServeConfig, cores: int) -> ServeConfig:
    """``config`` with its automatic (0) ``workers`` and ``torch_threads`` made concrete for ``cores`` cores.

    Workers default to one per core because one process (event loop, decoding, inference) does
    not keep a second core busy: on 2 cores 2 workers answered 1.4-1.8x the requests/s of one
    (docs/load-test.md). Each worker then gets an equal share of the cores for PyTorch, so
    workers x threads stays at the core count instead of every worker starting a thread per core.
    """
    workers = config.workers or max(1, cores)
    threads = config.torch_threads or max(1, cores // workers)
    return replace(config, workers=workers, torch_threads=threads)
