"""Optional ONNX Runtime backend: the same model and predictions, a faster forward pass on CPU.

The model file's weights are exported to ONNX in memory at start-up (nothing is read from or
written to disk, so the no-code-on-load guarantee of the model file holds) and run by an ONNX
Runtime session. ``OrtModule`` stands in for the PyTorch module inside a copy of the
recogniser, so preprocessing, calibration and everything the recogniser derives from the
logits stay exactly the library's. Needs the ``onnx`` extra.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..predict import Recogniser
from ..preprocess import IMAGE_SIZE

__all__ = ["OrtModule", "onnx_recogniser", "MISSING_ONNX"]

MISSING_ONNX = "the ONNX backend needs the onnx extra: pip install 'digitrec[onnx]'"


class OrtModule(nn.Module):
    """A torch module whose forward runs an ONNX Runtime session (CPU, inference only)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        # The exporter may rename the input (for instance to "input.1"): ask the session.
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime wants contiguous NCHW float32 (the recogniser hands over channels_last).
        logits = self.session.run(None, {self.input_name: x.float().contiguous().numpy()})[0]  # (B, 10)
        return torch.from_numpy(logits)


def onnx_recogniser(rec: Recogniser, threads: int = 1) -> Recogniser:
    """A copy of ``rec`` whose forward pass runs in ONNX Runtime with ``threads`` threads."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{MISSING_ONNX} (missing module {exc.name})") from None
    if rec.device.type != "cpu":
        raise ConfigError("the ONNX backend runs on the CPU; use --device cpu")
    model = rec.model_file.model.eval()
    example = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs no extra packages beyond onnx; torch warns that
        # its newer exporter (which needs onnxscript) is the default now.
        warnings.simplefilter("ignore")
        # The TorchScript exporter also writes to file objects (torch's stubs say paths only).
        torch.onnx.export(
            model, (example,), buf,  # type: ignore[arg-type]
            input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    model_file = dataclasses.replace(rec.model_file, model=OrtModule(session))
    # fp32: ONNX Runtime computes in float32 whatever the recogniser's autocast setting.
    clone = Recogniser.__new__(type(rec))
    clone.__dict__.update(rec.__dict__)
    clone.model_file = model_file
    clone.precision = "fp32"
    return clone
