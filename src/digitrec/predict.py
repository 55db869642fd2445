"""The recogniser: a loaded model plus the shared preprocessing, answering typed predictions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, overload

import numpy as np
import torch
from PIL import Image

from .checkpoint import ModelFile, load_model
from .errors import ImageError
from .infer import InferenceEngine
from .preprocess import ImageSource, to_mnist
from .runtime import resolve_device, resolve_precision

__all__ = ["Prediction", "Recogniser", "load"]


@dataclass(frozen=True)
class Prediction:
    """The answer for one image."""

    digit: int  # most probable class
    confidence: float  # its softmax probability, 0..1
    probabilities: tuple[float, ...]  # all ten class probabilities, summing to 1
    top: tuple[tuple[int, float], ...]  # the three most probable (digit, probability), best first
    input: np.ndarray = field(repr=False, compare=False)  # the (28, 28) [0, 1] image the model saw

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the input image)."""
        return {
            "digit": self.digit,
            "confidence": self.confidence,
            "top3": [{"digit": d, "probability": p} for d, p in self.top],
            "probabilities": list(self.probabilities),
        }


class Recogniser:
    """Recognises handwritten digits with one loaded model.

    >>> rec = digitrec.load("seed")
    >>> rec.predict("my_digit.png").digit
    """

    def __init__(
        self, model_file: ModelFile, device: torch.device, precision: str = "fp32", backend: str = "auto"
    ) -> None:
        self.model_file = model_file
        self.device = device
        self.precision = precision
        self._engine = InferenceEngine(model_file, device, precision, backend)

    @property
    def backend(self) -> str:
        """The inference backend in use: ``"onnx"`` (ONNX Runtime) or ``"torch"``."""
        return self._engine.backend

    @property
    def name(self) -> str:
        """The model file's name without suffix (bundled models: their name)."""
        return self.model_file.path.stem if self.model_file.path else self.model_file.arch

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything stored in the model file besides the weights."""
        return self.model_file.metadata

    def prepare(self, image: ImageSource) -> np.ndarray:
        """The (28, 28) [0, 1] white-on-black image the model will see for ``image``."""
        return to_mnist(image)

    def predict_arrays(self, images: np.ndarray) -> list[Prediction]:
        """Predict already-prepared images: float [0, 1] or uint8, shape (N, 28, 28)."""
        arr = np.asarray(images)
        if arr.ndim != 3 or arr.shape[1:] != (28, 28):
            raise ImageError(f"expected prepared images of shape (N, 28, 28), got {arr.shape}")
        if arr.dtype != np.uint8 and not (arr.dtype.kind == "f" and np.isfinite(arr).all()):
            raise ImageError(f"prepared images must be uint8 or finite floats (got {arr.dtype})")
        if len(arr) == 0:
            return []
        probs = self._engine.probabilities(arr)
        top_p, top_i = probs.topk(3, dim=1)
        # One bulk conversion to Python floats; per-row NumPy work dominated large batches.
        rows, tops_p, tops_i = probs.tolist(), top_p.tolist(), top_i.tolist()
        scale = 255.0 if arr.dtype == np.uint8 else 1.0
        return [
            Prediction(
                digit=ti[0],
                confidence=tp[0],
                probabilities=tuple(row),
                top=tuple(zip(ti, tp)),
                input=img.astype(np.float32) / scale,
            )
            for row, tp, ti, img in zip(rows, tops_p, tops_i, arr)
        ]

    @overload
    def predict(self, image: list[ImageSource] | tuple[ImageSource, ...]) -> list[Prediction]: ...

    @overload
    def predict(self, image: np.ndarray) -> Prediction | list[Prediction]: ...

    @overload
    def predict(self, image: str | os.PathLike | bytes | BinaryIO | Image.Image) -> Prediction: ...

    def predict(self, image: ImageSource | Sequence[ImageSource]) -> Prediction | list[Prediction]:
        """Predict one image, or a list (or (N, H, W) array) of images.

        An image may be a path, bytes, a file object, a PIL image or a NumPy array. A single
        image returns one :class:`Prediction`; a list, a tuple or an (N, H, W) array returns a
        list. (An (H, W, 3|4) array is one colour image.)
        """
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
            if len(image) == 0:
                return []
            return self.predict_arrays(np.stack([to_mnist(a) for a in image]))
        if isinstance(image, (list, tuple)):
            if not image:
                return []
            return self.predict_arrays(np.stack([to_mnist(i) for i in image]))
        return self.predict_arrays(to_mnist(image)[None])[0]  # type: ignore[arg-type]


def load(
    name_or_path: str | os.PathLike[str] = "seed",
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "auto",
) -> Recogniser:
    """Load a bundled model by name (``"seed"``) or a model file by path into a :class:`Recogniser`.

    Inference defaults to the CPU in fp32, the fastest choice for one image at a time;
    pass ``device="auto"`` to use CUDA when available. ``backend`` is ``"auto"`` (ONNX Runtime
    when installed and on the CPU in fp32, else PyTorch), ``"torch"`` or ``"onnx"``.
    """
    dev = resolve_device(device)
    return Recogniser(load_model(name_or_path, dev), dev, resolve_precision(precision, dev), backend)
