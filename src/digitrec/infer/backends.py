"""Inference backends: the fastest available way to turn prepared images into probabilities.

Two backends compute the same function (normalise, model, softmax with the model file's
temperature):

- ``torch``: eager PyTorch, channels_last, with bf16 autocast when asked for. Runs anywhere
  the model runs, CUDA included.
- ``onnx``: the model exported to ONNX and run by ONNX Runtime (:mod:`digitrec.infer.onnx`),
  when the optional ``onnxruntime`` package is installed. On small CPUs it has far less per-call
  overhead than eager PyTorch: measured in ``bench/speed.py``. A file's graph is exported once
  and cached per user, so later processes skip the export.

``auto`` picks ``onnx`` for fp32 on the CPU when ONNX Runtime imports, else ``torch``. int8
runs on ``onnx`` alone, through the statically quantized graph of :mod:`digitrec.infer.quantize`.
:func:`export_onnx` writes the same graph to a file for deployment.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from digitrec.cfg.base import BACKENDS
from digitrec.data.ink import LINE_HEIGHT, LINE_STRIDE
from digitrec.data.preprocess import IMAGE_SIZE, Normalization
from digitrec.errors import DigitrecError, first_line
from digitrec.fileio import atomic_write
from digitrec.infer.evaluate import predict_logits
from digitrec.infer.onnx import (  # noqa: F401  (onnxruntime_available: re-exported for callers)
    CHUNK,
    ONNX_OPSET,
    OnnxRunner,
    cached_graph,
    onnxruntime_available,
    resolve_backend,
    store_graph,
)
from digitrec.models.checkpoint import ModelFile
from digitrec.models.registry import create_model, get_model_spec

__all__ = ["BACKENDS", "onnxruntime_available", "resolve_backend", "ProbabilityModel", "InferenceEngine",
           "export_onnx", "onnx_graph", "LineLogProbModel"]

class ProbabilityModel(nn.Module):
    """[0, 1] images (B, 28, 28) -> class probabilities (B, C): normalisation and temperature inside.

    The whole inference function as one module, so that an exported graph needs nothing else.
    """

    def __init__(self, model: nn.Module, normalization: Normalization, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.mean = normalization.mean
        self.std = normalization.std
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.unsqueeze(1) - self.mean) / self.std  # (B, 1, 28, 28)
        return (self.model(x) / self.temperature).softmax(dim=1)


class LineLogProbModel(ProbabilityModel):
    """[0, 1] lines (B, 32, W) -> frame log-probabilities (B, W/4, 11): a line reader's inference function."""

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        x = (lines.unsqueeze(1) - self.mean) / self.std  # (B, 1, 32, W)
        return (self.model(x).float() / self.temperature).log_softmax(dim=1).transpose(1, 2)  # (B, W/4, 11)


def _copy(model_file: ModelFile) -> nn.Module:
    # A private CPU copy in plain layout: exporting must not touch the caller's model.
    model = create_model(model_file.arch, dict(model_file.model_config))
    with torch.no_grad():
        model.load_state_dict({k: v.detach().cpu().clone() for k, v in model_file.model.state_dict().items()})
    return model.eval()


def _onnx_bytes(model_file: ModelFile) -> bytes:
    lines = get_model_spec(model_file.arch).task == "lines"
    wrapper = (LineLogProbModel if lines else ProbabilityModel)(_copy(model_file), model_file.normalization,
                                                               model_file.temperature).eval()
    if lines:  # any width (a multiple of LINE_STRIDE), any batch
        example = torch.zeros(1, LINE_HEIGHT, 32 * LINE_STRIDE)
        names = ["lines", "log_probs"]
        axes = {"lines": {0: "batch", 2: "width"}, "log_probs": {0: "batch", 1: "frames"}}
    else:
        example = torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE)
        names, axes = ["images", "probabilities"], {"images": {0: "batch"}, "probabilities": {0: "batch"}}
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript-based exporter needs no extra packages; torch flags it as legacy.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), buf,  # type: ignore[arg-type]  # file objects work too
                input_names=names[:1], output_names=names[1:], dynamic_axes=axes,
                opset_version=ONNX_OPSET, dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise DigitrecError(f"cannot export {model_file.arch!r} to ONNX: {first_line(exc)}") from exc
    return buf.getvalue()


def export_onnx(model_file: ModelFile, path: str | os.PathLike[str]) -> None:
    """Write ``model_file`` as an ONNX graph: input ``images`` (N, 28, 28) float32 in [0, 1]
    (white digit on black, as :func:`digitrec.data.preprocess.to_mnist` makes them), output
    ``probabilities`` (N, 10) float32, normalisation and temperature included."""
    blob = _onnx_bytes(model_file)
    with atomic_write(path) as fh:
        fh.write(blob)


def onnx_graph(model_file: ModelFile) -> bytes | Path:
    """The ONNX graph of ``model_file``: the cached one when its file was exported before, else exported now
    (and cached for the next process)."""
    if model_file.path is not None:
        cached = cached_graph(model_file.path)
        if cached is not None:
            return cached
    graph = _onnx_bytes(model_file)
    if model_file.path is not None:
        store_graph(model_file.path, graph)
    return graph


class InferenceEngine:
    """Runs one loaded model file on prepared images with the chosen backend (and precision: fp32, bf16, int8)."""

    def __init__(
        self,
        model_file: ModelFile,
        device: torch.device,
        precision: str = "fp32",
        backend: Literal["auto", "torch", "onnx"] | str = "auto",
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.backend: str = resolve_backend(backend, device.type, precision)  # "torch" or "onnx"
        self.model_file = model_file
        self.device = device
        self.precision = precision
        if precision == "int8":
            from digitrec.infer.quantize import int8_graph

            # Quantized once per model file and cached; calibration reads MNIST from data_dir.
            self._onnx = OnnxRunner(int8_graph(model_file, data_dir))
        elif self.backend == "onnx":
            # As many threads for batches as PyTorch is allowed (a server sets one per worker).
            self._onnx = OnnxRunner(onnx_graph(model_file))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) float32 for images (N, 28, 28): uint8, or floats in [0, 1]."""
        if self.backend == "onnx":
            return self._onnx.probabilities(images)
        x_t = torch.from_numpy(np.ascontiguousarray(images))
        if x_t.dtype != torch.uint8:
            x_t = x_t.float()
        mf = self.model_file
        logits = predict_logits(mf.model, x_t, device=self.device, precision=self.precision,
                                normalization=mf.normalization, batch_size=CHUNK)
        return (logits / mf.temperature).softmax(dim=1).cpu().numpy()
