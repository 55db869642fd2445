"""Batched inference and classification metrics: loss, accuracy, per-class P/R/F1, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitrec.data.mnist import MNIST
from digitrec.data.preprocess import NORMALIZATION, Normalization, normalize
from digitrec.errors import ConfigError, DatasetError
from digitrec.models.checkpoint import load_model, read_metadata
from digitrec.runtime import autocast, resolve_device, resolve_precision

__all__ = ["predict_logits", "EvalResult", "evaluate", "evaluate_probabilities", "confusion_matrix",
           "per_class_metrics", "FileEvaluation", "check_classes", "evaluate_model_file"]


def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 100,
    normalization: Normalization = NORMALIZATION,
) -> torch.Tensor:
    """Logits (N, C) in float32 on ``device`` for uint8 or [0, 1] images (N, 28, 28) or (N, 1, 28, 28).

    The model is put in eval mode and restored afterwards.
    """
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.inference_mode(), autocast(device, precision):
            for i in range(0, len(images), batch_size):
                xb = images[i : i + batch_size].to(device, non_blocking=True)
                if xb.dim() == 3:
                    xb = xb.unsqueeze(1)  # (B, 1, 28, 28)
                xb = normalize(xb, normalization).contiguous(memory_format=torch.channels_last)
                outs.append(model(xb).float())
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0, 10, device=device)
    return torch.cat(outs)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


@dataclass(frozen=True)
class EvalResult:
    """Metrics of a model on a labelled set, plus the per-image predictions behind them."""

    loss: float  # mean cross-entropy, nats
    accuracy: float  # fraction correct, 0..1
    confusion: np.ndarray  # (10, 10) counts, row = true, column = predicted
    precision: np.ndarray  # (10,) per class
    recall: np.ndarray  # (10,) per class
    f1: np.ndarray  # (10,) per class
    support: np.ndarray  # (10,) true images per class
    predictions: np.ndarray  # (N,) predicted class per image
    confidences: np.ndarray  # (N,) softmax probability of the predicted class

    @property
    def errors(self) -> int:
        """Number of misclassified images."""
        return int(self.confusion.sum() - np.trace(self.confusion))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (without the per-image arrays)."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "errors": self.errors,
            "count": int(self.confusion.sum()),
            "per_class": {
                str(c): {
                    "precision": float(self.precision[c]),
                    "recall": float(self.recall[c]),
                    "f1": float(self.f1[c]),
                    "support": int(self.support[c]),
                }
                for c in range(len(self.support))
            },
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 100,
    normalization: Normalization = NORMALIZATION,
    temperature: float = 1.0,
) -> EvalResult:
    """Evaluate ``model`` on uint8 images (N, 28, 28) with integer labels (N,)."""
    labels_np = _check_labels(images, labels)
    x = torch.as_tensor(images)
    logits = predict_logits(
        model, x, device=device, precision=precision, batch_size=batch_size, normalization=normalization
    ) / temperature
    return _result(logits.log_softmax(dim=1), torch.as_tensor(labels_np, dtype=torch.long).to(device))


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray | torch.Tensor) -> EvalResult:
    """Metrics of class probabilities (N, C) from another runtime (e.g. an int8 ONNX graph) against labels (N,)."""
    labels_np = _check_labels(probabilities, labels)
    # A probability rounded to 0 would make the loss infinite; 1e-12 caps one image's loss at 27.6 nats.
    log_probs = torch.from_numpy(np.asarray(probabilities, dtype=np.float32)).clamp_min(1e-12).log()
    return _result(log_probs, torch.as_tensor(labels_np, dtype=torch.long))


def _check_labels(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> np.ndarray:
    labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(images) != len(labels_np) or labels_np.ndim != 1:
        raise DatasetError(f"{len(images)} images but labels of shape {labels_np.shape}")
    if labels_np.dtype.kind not in "iu":
        raise DatasetError(f"labels must be integers, got {labels_np.dtype}")
    if len(labels_np) and (labels_np.min() < 0 or labels_np.max() >= 10):
        raise DatasetError(f"labels must be digits 0-9, found {labels_np.min()}..{labels_np.max()}")
    return labels_np


def _result(log_probs: torch.Tensor, y: torch.Tensor) -> EvalResult:
    """Metrics of log-probabilities (N, C) against labels (N,) on the same device."""
    loss = float(F.nll_loss(log_probs, y).item()) if len(y) else float("nan")
    probs = log_probs.exp()
    conf, pred = probs.max(dim=1)
    pred_np = pred.cpu().numpy()
    y_np = y.cpu().numpy()
    cm = confusion_matrix(y_np, pred_np, num_classes=log_probs.shape[1])
    pcm = per_class_metrics(cm)
    return EvalResult(
        loss=loss,
        accuracy=float((pred_np == y_np).mean()) if len(y_np) else float("nan"),
        confusion=cm,
        precision=pcm["precision"],
        recall=pcm["recall"],
        f1=pcm["f1"],
        support=pcm["support"],
        predictions=pred_np,
        confidences=conf.cpu().numpy(),
    )


@dataclass(frozen=True)
class FileEvaluation:
    """A model file evaluated on an MNIST split."""

    arch: str  # the file's architecture
    result: EvalResult  # the metrics and per-image answers
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))  # the name of each class, as stored in the file


def evaluate_model_file(model: str, mnist: MNIST, *, split: str = "test", device: str | torch.device = "auto",
                        precision: str = "auto") -> FileEvaluation:
    """Load ``model`` (a file or bundled name) and evaluate it on ``mnist``'s ``split`` ("test" or "train").

    ``mnist`` may be any IDX dataset; the model must have been trained on its classes (same
    names, same order), else :class:`ConfigError`. ``precision`` "int8" runs the model's int8
    ONNX graph (:mod:`digitrec.infer.quantize`, calibrated on MNIST validation images) on the
    CPU; the others run PyTorch.
    """
    dev = resolve_device(device)
    check_classes(model, mnist.class_names, mnist.name)
    mf = load_model(model, dev, num_classes=len(mnist.class_names))
    if precision == "int8":
        from digitrec.infer.onnx import OnnxRunner, resolve_backend
        from digitrec.infer.quantize import int8_graph

        resolve_backend("onnx", dev.type, precision)  # CPU and ONNX Runtime, else one line
        images, labels = mnist.split(split)
        probs = OnnxRunner(int8_graph(mf, mnist.directory)).probabilities(images)
        return FileEvaluation(mf.arch, evaluate_probabilities(probs, labels), tuple(mf.class_names))
    images, labels = mnist.split(split)
    result = evaluate(mf.model, images, labels, device=dev, precision=resolve_precision(precision, dev),
                      normalization=mf.normalization, temperature=mf.temperature)
    return FileEvaluation(mf.arch, result, tuple(mf.class_names))


def check_classes(model: str, class_names: Sequence[str], dataset: str) -> None:
    """Raise :class:`ConfigError` unless ``model``'s stored classes are ``class_names`` (reads the header only)."""
    stored = read_metadata(model).get("class_names", [str(d) for d in range(10)])
    if not isinstance(stored, list) or tuple(stored) != tuple(class_names):
        shown = _shown(stored) if isinstance(stored, list) else repr(stored)
        raise ConfigError(f"{model}: its classes ({shown}) are not those of {dataset} "
                          f"({_shown(class_names)}); evaluate it with the dataset it was trained on")


def _shown(names: Sequence[object]) -> str:
    return ", ".join(str(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
