"""Inference: backends (PyTorch, ONNX Runtime), the Recogniser behind ``digitrec.load``, and evaluation.

The names below load on first use: ``digitrec.infer.onnx`` and the recogniser answer single
digits through ONNX Runtime without importing PyTorch.
"""

from __future__ import annotations

from digitrec.compat import lazy_exports

_LAZY = {
    "BACKENDS": "digitrec.cfg.base",
    "onnxruntime_available": "digitrec.infer.onnx",
    "ProbabilityModel": "digitrec.infer.backends",
    "InferenceEngine": "digitrec.infer.backends",
    "export_onnx": "digitrec.infer.backends",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
