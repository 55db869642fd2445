"""The training engine: whole dataset as one in-memory tensor, channels_last, bf16 autocast.

The defaults reproduce the reference notebook's recipe: Adam (lr 1e-3), cross-entropy,
batch 100, 10 epochs. The library reports progress through a callback and never prints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .calibrate import Calibration, calibration_report
from .checkpoint import save_model
from .data import MNIST, load_mnist
from .errors import ConfigError
from .evaluate import EvalResult, evaluate, predict_logits
from .models import check_model_output, create_model, get_model_spec, model_config_dict
from .preprocess import normalize
from .runtime import autocast, resolve_device, resolve_precision, seed_everything

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "TrainCallback",
    "TrainResult",
    "split_train_val",
    "fit",
    "train",
    "MAX_SEED",
]

MAX_SEED = 2**63  # seeds must fit torch's generator (signed 64-bit here)
_PROGRESS_EVERY = 25  # steps between progress callbacks (each one syncs with the device)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. The defaults are the reference notebook's."""

    arch: str = "seed"  # registered architecture name
    model_config: Mapping[str, Any] = field(default_factory=dict)  # overrides of its config class
    epochs: int = 10  # passes over the training split
    batch_size: int = 100  # images per optimiser step
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds weights init, validation split and shuffling
    val_size: int = 5000  # images held out of the 60,000 for validation (0 = train on all)
    limit: int = 0  # use only the first N training images, for quick runs (0 = all)
    precision: str = "auto"  # "auto" (bf16 where native), "fp32" or "bf16"
    eval_batch_size: int = 100  # images per forward pass when evaluating (small batches stay in cache)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values of the wrong type or out of range.

        Also builds the architecture once and checks that it maps 28x28 images to ten
        classes, so a bad ``model_config`` fails before any data is loaded.
        """
        get_model_spec(self.arch)
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("val_size", 0), ("limit", 0),
                          ("eval_batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < low:
                raise ConfigError(f"{name.replace('_', ' ')} must be >= {low}, got {value}")
        if self.seed >= MAX_SEED:
            raise ConfigError(f"seed must be < 2**63, got {self.seed}")
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
                and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"invalid precision {self.precision!r} (use auto, fp32 or bf16)")
        check_model_output(create_model(self.arch, dict(self.model_config)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the model file)."""
        d = dataclasses.asdict(self)
        d["model_config"] = dict(self.model_config)
        return d


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one completed epoch."""

    epoch: int  # 1-based
    loss: float  # mean training cross-entropy over the epoch
    accuracy: float  # training accuracy over the epoch, 0..1
    val_loss: float | None  # validation cross-entropy after the epoch (None without a split)
    val_accuracy: float | None  # validation accuracy after the epoch
    seconds: float  # wall time of the training steps of this epoch
    images_per_s: float  # training throughput


class TrainCallback(Protocol):
    """Receives progress; the CLI draws bars with it. An object may implement any subset."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def on_step(self, step: int, loss: float, accuracy: float, images_per_s: float) -> None: ...

    def on_epoch_end(self, record: EpochRecord) -> None: ...


@dataclass
class TrainResult:
    """What a training run produced: the model (eval mode), its history and final metrics."""

    model: nn.Module
    config: TrainConfig
    history: list[EpochRecord]
    device: str  # where it trained
    precision: str  # "fp32" or "bf16", as resolved
    interrupted: bool  # stopped by Ctrl-C; the model is the last completed epoch's
    val: EvalResult | None = None  # final metrics on the validation split
    test: EvalResult | None = None  # final metrics on the test set, evaluated once at the end
    dataset: dict[str, Any] = field(default_factory=dict)  # name, sizes, checksums
    train_seconds: float = 0.0  # total wall time of the training steps
    calibration: Calibration | None = None  # temperature fitted on the validation split (None: T = 1)

    @property
    def epochs_completed(self) -> int:
        """Number of epochs whose weights the model holds."""
        return len(self.history)

    def metrics(self) -> dict[str, Any]:
        """Final metrics as a flat JSON-ready dict."""
        out: dict[str, Any] = {
            "epochs_completed": self.epochs_completed,
            "train_seconds": round(self.train_seconds, 3),
        }
        if self.history:
            out["train_loss"] = self.history[-1].loss
            out["train_accuracy"] = self.history[-1].accuracy
        if self.val is not None:
            out["val_loss"], out["val_accuracy"] = self.val.loss, self.val.accuracy
        if self.test is not None:
            out["test_loss"], out["test_accuracy"] = self.test.loss, self.test.accuracy
        return out

    def save(self, path: str | Path) -> Path:
        """Write the model file with the recipe, history, dataset checksums and metrics."""
        model_config = model_config_dict(self.model)
        extra = {
            "train_config": self.config.to_dict(),
            "trained_on": {"device": self.device, "precision": self.precision},
            "dataset": self.dataset,
            "metrics": self.metrics(),
            "history": [dataclasses.asdict(r) for r in self.history],
            "interrupted": self.interrupted,
            "temperature": self.calibration.temperature if self.calibration else 1.0,
        }
        if self.calibration is not None:
            extra["calibration"] = self.calibration.to_dict()
        return save_model(path, self.model, self.config.arch, model_config, extra=extra)


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split into (train_x, train_y, val_x, val_y), stratification-free."""
    if val_size >= len(images):
        raise ConfigError(f"validation size {val_size} leaves no training images (of {len(images)})")
    order = np.random.default_rng(seed).permutation(len(images))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def _to_device_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    # Normalise once up front: the whole set stays on the device as one float tensor.
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1)  # (N, 1, 28, 28) uint8
    return normalize(x).contiguous(memory_format=torch.channels_last)


def _make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    # One fused (CUDA) or multi-tensor (CPU) kernel per step instead of one per parameter.
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def fit(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    device: torch.device,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    callback: TrainCallback | None = None,
) -> TrainResult:
    """Train a fresh model of ``config.arch`` on uint8 images (N, 28, 28) and labels (N,).

    Ctrl-C (KeyboardInterrupt) stops cleanly: the model returned holds the weights of the last
    completed epoch and ``interrupted`` is set.
    """
    config.validate()
    precision = resolve_precision(config.precision, device)
    seed_everything(config.seed)
    model = create_model(config.arch, dict(config.model_config)).to(device)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = _make_optimizer(model, config.lr, device)
    x = _to_device_tensor(train_images, device)
    y = torch.from_numpy(train_labels.astype(np.int64)).to(device)
    n = len(x)
    steps = math.ceil(n / config.batch_size)
    shuffle = torch.Generator().manual_seed(config.seed)
    history: list[EpochRecord] = []
    good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # Callbacks may implement any subset of the three methods.
    on_epoch_start = getattr(callback, "on_epoch_start", None)
    on_step = getattr(callback, "on_step", None)
    on_epoch_end = getattr(callback, "on_epoch_end", None)
    has_val = val_images is not None and val_labels is not None and len(val_images) > 0
    last_val: EvalResult | None = None  # validation of the weights in good_state
    interrupted = False
    train_seconds = 0.0
    try:
        for epoch in range(1, config.epochs + 1):
            if on_epoch_start:
                on_epoch_start(epoch, config.epochs, steps)
            model.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            start = time.perf_counter()
            for step in range(1, steps + 1):
                idx = perm[(step - 1) * config.batch_size : step * config.batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                with autocast(device, precision):
                    logits = model(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulate on the device; reading values back would sync every step.
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                seen += len(idx)
                if on_step and (step % _PROGRESS_EVERY == 0 or step == steps):
                    elapsed = time.perf_counter() - start
                    on_step(
                        step, loss_sum.item() / seen, correct.item() / seen, seen / max(elapsed, 1e-9)
                    )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            train_seconds += seconds
            val = None
            if has_val:
                val = evaluate(
                    model, val_images, val_labels, device=device,  # type: ignore[arg-type]
                    precision=precision, batch_size=config.eval_batch_size,
                )
            record = EpochRecord(
                epoch=epoch,
                loss=loss_sum.item() / n,
                accuracy=correct.item() / n,
                val_loss=val.loss if val else None,
                val_accuracy=val.accuracy if val else None,
                seconds=seconds,
                images_per_s=n / seconds,
            )
            history.append(record)
            good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            last_val = val
            if on_epoch_end:
                on_epoch_end(record)
    except KeyboardInterrupt:
        interrupted = True
        model.load_state_dict(good_state)
    model.eval()
    return TrainResult(
        model=model,
        config=config,
        history=history,
        device=str(device),
        precision=precision,
        interrupted=interrupted,
        val=last_val,
        train_seconds=train_seconds,
    )


def train(
    config: TrainConfig | None = None,
    *,
    data: MNIST | None = None,
    device: str | torch.device = "auto",
    callback: TrainCallback | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train on MNIST with ``config`` (default: the notebook recipe), then test once.

    Keyword ``overrides`` replace config fields, e.g. ``train(epochs=1, seed=3)``. The
    validation split (``val_size`` images) is carved from the training set with ``seed``; the
    test set is evaluated once, at the end, and never used for any choice.
    """
    try:
        config = dataclasses.replace(config or TrainConfig(), **overrides)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    config.validate()
    dev = resolve_device(device)
    mnist = data if data is not None else load_mnist()
    images, labels = mnist.train_images, mnist.train_labels
    if config.limit:
        images, labels = images[: config.limit], labels[: config.limit]
    tx, ty, vx, vy = split_train_val(images, labels, config.val_size, config.seed)
    result = fit(config, tx, ty, device=dev, val_images=vx, val_labels=vy, callback=callback)
    if len(vx) and result.history:
        # Honest confidences: one temperature fitted on the validation split (argmax unchanged).
        logits = predict_logits(result.model, torch.from_numpy(np.ascontiguousarray(vx)), device=dev,
                                precision=result.precision, batch_size=config.eval_batch_size)
        result.calibration = calibration_report(logits, torch.from_numpy(vy.astype(np.int64)))
    try:
        result.test = evaluate(
            result.model, mnist.test_images, mnist.test_labels, device=dev,
            precision=result.precision, batch_size=config.eval_batch_size,
        )
    except KeyboardInterrupt:  # the trained model is still worth keeping, just untested
        result.interrupted = True
    result.dataset = {
        "name": "mnist",
        "train_size": len(tx),
        "val_size": len(vx),
        "test_size": len(mnist.test_images),
        "sha256": dict(mnist.sha256),
    }
    return result
