"""Inference: backends (PyTorch, ONNX Runtime), the Recogniser behind ``digitrec.load``, and evaluation."""

from digitrec.infer.backends import (  # noqa: F401
    BACKENDS,
    InferenceEngine,
    ProbabilityModel,
    export_onnx,
    onnxruntime_available,
)

__all__ = [
    "BACKENDS",
    "onnxruntime_available",
    "ProbabilityModel",
    "InferenceEngine",
    "export_onnx",
]
