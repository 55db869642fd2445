"""Inference: backends (PyTorch, ONNX Runtime), the Recogniser behind ``digitrec.load``, and evaluation.

The names below load on first use: ``digitrec.infer.onnx`` and the recogniser answer single
digits through ONNX Runtime without importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BACKENDS": "digitrec.cfg.base",
    "onnxruntime_available": "digitrec.infer.onnx",
    "ProbabilityModel": "digitrec.infer.backends",
    "InferenceEngine": "digitrec.infer.backends",
    "export_onnx": "digitrec.infer.backends",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digitrec.infer' has no attribute {name!r}")
