"""Temperature scaling: make a model's confidences honest, fitted on the validation split.

One scalar T divides the logits (softmax(z / T)); it is chosen to minimise the negative
log-likelihood of the validation labels, which leaves every prediction (the argmax) unchanged
and only makes the probabilities mean what they say. The validation split is re-created from
the recipe stored in the model file (seed, val_size, limit), so it is exactly the split the
model was not trained on; the test set is never used.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from digitrec.data.mnist import MNIST, load_mnist, split_train_val
from digitrec.errors import ConfigError
from digitrec.infer.evaluate import predict_logits
from digitrec.models.checkpoint import ModelFile, load_model, resolve_model_path, write_metadata

__all__ = [
    "ECE_BINS",
    "Calibration",
    "fit_temperature",
    "expected_calibration_error",
    "calibration_report",
    "validation_split",
    "calibrate_model_file",
]

ECE_BINS = 15  # equal-width confidence bins for the expected calibration error


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and what it changed on the validation split."""

    temperature: float  # logits are divided by this before the softmax
    count: int  # validation images used
    nll_before: float  # mean negative log-likelihood at T = 1, nats
    nll_after: float  # at the fitted T
    ece_before: float  # expected calibration error at T = 1 (15 bins), 0..1
    ece_after: float  # at the fitted T

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the model file under "calibration")."""
        return {**asdict(self), "method": "temperature scaling, NLL on the validation split", "bins": ECE_BINS}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimising the NLL of ``labels`` under ``softmax(logits / T)`` (LBFGS on log T)."""
    z = logits.detach().float().cpu()
    y = labels.detach().long().cpu()
    if len(z) == 0:
        raise ConfigError("cannot fit a temperature on zero images")
    log_t = torch.zeros((), requires_grad=True)  # log T keeps T positive
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


def expected_calibration_error(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| weighted by bin size."""
    p = torch.as_tensor(probs).float().cpu()
    y = torch.as_tensor(labels).long().cpu()
    conf, pred = p.max(dim=1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += float(in_bin.float().mean()) * abs(float(correct[in_bin].mean()) - float(conf[in_bin].mean()))
    return ece


def calibration_report(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """Fit T on (logits, labels) and measure NLL and ECE before and after."""
    z, y = logits.float().cpu(), labels.long().cpu()
    t = fit_temperature(z, y)
    return Calibration(
        temperature=t,
        count=len(y),
        nll_before=float(F.cross_entropy(z, y)),
        nll_after=float(F.cross_entropy(z / t, y)),
        ece_before=expected_calibration_error(z.softmax(1), y),
        ece_after=expected_calibration_error((z / t).softmax(1), y),
    )


def validation_split(metadata: dict[str, Any], mnist: MNIST) -> tuple[np.ndarray, np.ndarray]:
    """The validation images and labels a model was trained without, from its stored recipe."""

    recipe = metadata.get("train_config")
    if not isinstance(recipe, dict):
        raise ConfigError("the model file has no training recipe (train_config); cannot rebuild its validation split")
    seed, val_size, limit = recipe.get("seed", 0), recipe.get("val_size", 0), recipe.get("limit", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (seed, val_size, limit)):
        raise ConfigError(f"bad training recipe in the model file: seed={seed!r} val_size={val_size!r} limit={limit!r}")
    if val_size == 0:
        raise ConfigError("the model was trained without a validation split (val_size 0); nothing to calibrate on")
    images, labels = mnist.train_images, mnist.train_labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    _, _, vx, vy = split_train_val(images, labels, val_size, seed)
    return vx, vy


def _model_logits(mf: ModelFile, images: np.ndarray, device: torch.device) -> torch.Tensor:
    return predict_logits(mf.model, torch.from_numpy(np.ascontiguousarray(images)), device=device,
                          normalization=mf.normalization)


def calibrate_model_file(
    name_or_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    data: MNIST | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Path, Calibration]:
    """Fit the temperature of a model file on its validation split and store it.

    Only the metadata changes ("temperature" and "calibration"); the weights are copied byte
    for byte. Writes ``out`` (default: the model file itself, atomically).
    """
    path = resolve_model_path(name_or_path)
    dev = torch.device(device)
    mf = load_model(path, dev)
    vx, vy = validation_split(mf.metadata, data if data is not None else load_mnist())
    report = calibration_report(_model_logits(mf, vx, dev), torch.from_numpy(vy.astype(np.int64)))
    target = write_metadata(path, {"temperature": report.temperature, "calibration": report.to_dict()},
                            out=out if out is not None else path)
    return target, report
