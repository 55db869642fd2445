"""Inference backends: the fastest available way to turn prepared images into probabilities.

Two backends compute the same function (normalise, model, softmax with the model file's
temperature):

- ``torch``: eager PyTorch, channels_last, with bf16 autocast when asked for. Runs anywhere
  the model runs, CUDA included.
- ``onnx``: the model exported to ONNX (in memory, at load time) and run by ONNX Runtime, when
  the optional ``onnxruntime`` package is installed. On small CPUs it has far less per-call
  overhead than eager PyTorch: measured in ``bench/speed.py``.

``auto`` picks ``onnx`` for fp32 on the CPU when ONNX Runtime imports, else ``torch``.
:func:`export_onnx` writes the same graph to a file for deployment.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from digitrec.cfg.base import BACKENDS
from digitrec.data.preprocess import IMAGE_SIZE, Normalization
from digitrec.errors import ConfigError, DigitrecError, first_line
from digitrec.fileio import atomic_write
from digitrec.infer.evaluate import predict_logits
from digitrec.models.checkpoint import ModelFile
from digitrec.models.registry import create_model

__all__ = ["BACKENDS", "onnxruntime_available", "ProbabilityModel", "InferenceEngine", "export_onnx"]

# Up to this many images per call run on one thread: for a handful of images, waking a
# second thread costs more than it saves, and on a busy machine it waits for a free core.
_SMALL_BATCH = 8
_CHUNK = 100  # images per forward pass for large inputs (activations stay in cache)
_ONNX_OPSET = 17


def onnxruntime_available() -> bool:
    """Whether the optional ONNX Runtime package imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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


def _probability_model(model_file: ModelFile) -> ProbabilityModel:
    # A private CPU copy in plain layout: exporting must not touch the caller's model.
    model = create_model(model_file.arch, dict(model_file.model_config))
    with torch.no_grad():
        model.load_state_dict({k: v.detach().cpu().clone() for k, v in model_file.model.state_dict().items()})
    model.eval()
    return ProbabilityModel(model, model_file.normalization, model_file.temperature).eval()


def _onnx_bytes(model_file: ModelFile) -> bytes:
    wrapper = _probability_model(model_file)
    example = torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript-based exporter needs no extra packages; torch flags it as legacy.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), buf,  # type: ignore[arg-type]  # file objects work too
                input_names=["images"], output_names=["probabilities"],
                dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=_ONNX_OPSET, dynamo=False,
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


class InferenceEngine:
    """Runs one loaded model file on prepared images with the chosen backend."""

    def __init__(
        self,
        model_file: ModelFile,
        device: torch.device,
        precision: str = "fp32",
        backend: Literal["auto", "torch", "onnx"] | str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"invalid backend {backend!r} (use {', '.join(BACKENDS)})")
        onnx_ok = device.type == "cpu" and precision == "fp32"
        if backend == "onnx":
            if not onnx_ok:
                raise ConfigError("the onnx backend runs on the CPU in fp32 only")
            if not onnxruntime_available():
                raise ConfigError("the onnx backend needs ONNX Runtime: pip install 'digitrec[onnx]'")
        elif backend == "auto":
            backend = "onnx" if onnx_ok and onnxruntime_available() else "torch"
        self.model_file = model_file
        self.device = device
        self.precision = precision
        self.backend: str = backend  # the backend in use: "torch" or "onnx"
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()  # a server's threads may ask for the first session at once
        if backend == "onnx":
            self._onnx = _onnx_bytes(model_file)

    def _session(self, kind: str) -> Any:
        # Two sessions over one graph: one thread for a few images, PyTorch's thread count (all
        # cores by default) for batches. Sessions are safe to call from several threads at once.
        with self._lock:
            if kind not in self._sessions:
                self._sessions[kind] = self._new_session(kind)
            return self._sessions[kind]

    def _new_session(self, kind: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if kind == "small":
            options.intra_op_num_threads = 1
        else:
            # As many threads as PyTorch is allowed (a server sets one per worker); spinning
            # threads would steal the cores other work (or a server's event loop) needs.
            options.intra_op_num_threads = torch.get_num_threads()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self._onnx, options, providers=["CPUExecutionProvider"])

    def probabilities(self, images: np.ndarray) -> torch.Tensor:
        """Class probabilities (N, C) float32 on the CPU for images (N, 28, 28): uint8, or floats in [0, 1]."""
        n = len(images)
        if self.backend == "onnx":
            x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 \
                else np.ascontiguousarray(images, dtype=np.float32)
            session = self._session("small" if n <= _SMALL_BATCH else "batch")
            if n <= _CHUNK:
                return torch.from_numpy(session.run(None, {"images": x})[0])
            outs = [session.run(None, {"images": x[i : i + _CHUNK]})[0] for i in range(0, n, _CHUNK)]
            return torch.from_numpy(np.concatenate(outs))
        x_t = torch.from_numpy(np.ascontiguousarray(images))
        if x_t.dtype != torch.uint8:
            x_t = x_t.float()
        mf = self.model_file
        logits = predict_logits(mf.model, x_t, device=self.device, precision=self.precision,
                                normalization=mf.normalization, batch_size=_CHUNK)
        return (logits / mf.temperature).softmax(dim=1).cpu()
