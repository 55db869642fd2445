"""The training engine: whole dataset as one in-memory tensor, channels_last, bf16 autocast.

The defaults reproduce the reference notebook's recipe: Adam (lr 1e-3), cross-entropy,
batch 100, 10 epochs. Optional features for accuracy (see ``presets.py``): random affine
augmentation, one-cycle or cosine LR, AdamW/SGD, weight decay, label smoothing, an EMA of the
weights, early stopping and best-epoch selection on the validation split, and per-epoch
checkpoints that resume exactly after a crash. The library reports progress through a callback
and never prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from digitrec.cfg.base import MAX_SEED
from digitrec.cfg.train import TrainConfig
from digitrec.data.augment import random_affine
from digitrec.data.mnist import MNIST, load_mnist, split_train_val
from digitrec.data.preprocess import normalize
from digitrec.errors import ConfigError
from digitrec.infer.evaluate import EvalResult, evaluate, predict_logits
from digitrec.models.checkpoint import save_model
from digitrec.models.registry import create_model, model_config_dict
from digitrec.runtime import autocast, resolve_device, resolve_precision, seed_everything
from digitrec.train.calibrate import Calibration, calibration_report
from digitrec.train.loop import LoopState, run_loop
from digitrec.train.optim import WeightEMA, lr_at, make_optimizer, snapshot  # noqa: F401
from digitrec.train.resume import (
    load_train_state,
    pack_optimizer,
    read_train_state,
    save_train_state,
    unpack_optimizer,
)

if TYPE_CHECKING:
    from digitrec.train.distributed import Dist

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "epoch_rank",
    "TrainCallback",
    "TrainResult",
    "split_train_val",
    "lr_at",
    "fit",
    "train",
    "MAX_SEED",
]

_PROGRESS_EVERY = 25  # steps between progress callbacks (each one syncs with the device)


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
    best_epoch: int | None = None  # epoch whose weights the model holds when keep_best selected one
    stopped_early: bool = False  # early stopping ended the run before config.epochs
    calibration: Calibration | None = None  # temperature fitted on the validation split (None: T = 1)
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))  # the dataset's name of each output

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
        if self.best_epoch is not None:
            out["best_epoch"] = self.best_epoch
        if self.stopped_early:
            out["stopped_early"] = True
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
        return save_model(path, self.model, self.config.arch, model_config, extra=extra,
                          class_names=list(self.class_names))


def _to_device_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    # Normalise once up front: the whole set stays on the device as one float tensor.
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1)  # (N, 1, 28, 28) uint8
    return normalize(x).contiguous(memory_format=torch.channels_last)


def _rng_state(device: torch.device, shuffle: torch.Generator, augment: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "augment": augment.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device, shuffle: torch.Generator,
                   augment: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    augment.set_state(state["augment"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def epoch_rank(record: EpochRecord) -> tuple[float, float] | None:
    """How :func:`fit` ranks epochs to keep the best (higher is better): validation accuracy, then the lower loss.

    None for an epoch without validation figures.
    """
    if record.val_accuracy is None or record.val_loss is None:
        return None
    return record.val_accuracy, -record.val_loss


def fit(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    device: torch.device,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    callback: TrainCallback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    init_state: Mapping[str, torch.Tensor] | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train a model of ``config.arch`` on uint8 images (N, 28, 28) and labels (N,).

    The model starts from fresh weights, or from ``init_state`` (a state dict of the same
    architecture: fine-tuning).

    With ``checkpoint``, the full training state is written there (atomically) after every
    epoch; with ``resume`` too, a run whose checkpoint exists continues from its last completed
    epoch and, on the same device and thread count, ends with the same weights as an
    uninterrupted run. The checkpoint must come from the same recipe (else :class:`ConfigError`).

    Ctrl-C (KeyboardInterrupt) stops cleanly: the model returned holds the weights of the last
    completed epoch (or the best one with ``keep_best``) and ``interrupted`` is set.

    With ``dist`` (one rank of a torch.distributed run, on ``dist.device``), the model trains
    as DistributedDataParallel: each step's global batch is ``config.batch_size`` images, each
    rank taking ``batch_size / world`` of them from a seeded :class:`DistributedSampler`. Only
    rank 0 validates and writes the checkpoint; the score it finds is sent to every rank, so
    all of them keep, stop and end alike. A checkpoint is read on rank 0 and sent to the others.
    """
    config.validate()
    if resume and checkpoint is None:
        raise ConfigError("resume needs a checkpoint file")
    if dist is not None and config.batch_size % dist.world:
        raise ConfigError(f"batch size {config.batch_size} is not divisible by {dist.world} processes "
                          "(the batch is the global one; each process takes an equal share)")
    main = dist is None or dist.is_main  # validates, tests, reports, writes files
    precision = resolve_precision(config.precision, device)
    seed_everything(config.seed)
    model = create_model(config.arch, dict(config.model_config)).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # DDP averages the gradients over the ranks in backward; ``model`` stays the plain module.
    net: nn.Module = model if dist is None else nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index or 0] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, config, device)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay else None
    eval_model = ema.model if ema else model  # the weights validated, selected and returned
    x = _to_device_tensor(train_images, device)
    y = torch.from_numpy(train_labels.astype(np.int64)).to(device)
    n = len(x)
    batch = config.batch_size // (dist.world if dist else 1)  # images per step on this process
    sampler = None if dist is None else DistributedSampler(
        range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=config.seed, drop_last=False)
    steps = math.ceil((len(sampler) if sampler is not None else n) / batch)
    total_steps = steps * config.epochs
    shuffle = torch.Generator().manual_seed(config.seed)
    # A separate stream for augmentation, so turning it on leaves shuffling unchanged; one per rank.
    augment_gen = torch.Generator().manual_seed(config.seed + 1 + (dist.rank if dist else 0))
    aug = config.augment
    background = float(normalize(torch.zeros(())))  # normalised value of a black pixel
    history: list[EpochRecord] = []
    good_state = snapshot(eval_model)
    # Callbacks may implement any subset of the three methods.
    on_epoch_start = getattr(callback, "on_epoch_start", None)
    on_step = getattr(callback, "on_step", None)
    on_epoch_end = getattr(callback, "on_epoch_end", None)
    has_val = val_images is not None and val_labels is not None and len(val_images) > 0
    last_val: EvalResult | None = None  # validation of the weights in good_state
    best_val: EvalResult | None = None  # validation of the best epoch's weights
    loop = LoopState()  # checks are epochs; the best epoch's weights, when kept or patience counts
    interrupted = False
    train_seconds = 0.0
    first_epoch = 1
    blob = None
    if resume and checkpoint is not None:
        if main and Path(checkpoint).is_file():
            blob = read_train_state(checkpoint)
        if dist is not None:
            blob = dist.broadcast_bytes(blob)
    if blob is not None:
        assert checkpoint is not None
        groups, meta = load_train_state(checkpoint, blob)
        # Fields added since a checkpoint was written read as their defaults: the recipe it ran.
        stored = {**json.loads(json.dumps(TrainConfig().to_dict())), **(meta.get("config") or {})}
        if stored != json.loads(json.dumps(config.to_dict())):
            raise ConfigError(f"{checkpoint}: checkpoint was written by a different recipe; "
                              "use the same flags or a new checkpoint file")
        # Each rank's shard and random streams depend on the number of processes.
        if int(meta.get("processes", 0)) != (dist.world if dist else 0):
            written = f"{meta['processes']} processes" if meta.get("processes") else "a single-process run"
            raise ConfigError(f"{checkpoint}: checkpoint was written by {written}; resume it the same way")
        model.load_state_dict(groups["model"])
        optimizer.load_state_dict(unpack_optimizer(groups.get("optimizer", {}), meta["optimizer"]))
        if ema:
            ema.model.load_state_dict(groups["ema"])
            ema.updates = int(meta["ema_updates"])
        _set_rng_state(groups["rng" if main else f"rng{dist.rank}"], device, shuffle, augment_gen)  # type: ignore[union-attr]
        history = [EpochRecord(**r) for r in meta["history"]]
        train_seconds = float(meta["train_seconds"])
        loop = LoopState(checks=len(history), bad=int(meta["bad_epochs"]), stopped=bool(meta["stopped_early"]))
        if meta["best_epoch"] is not None:
            loop.best_check, loop.best_state = meta["best_epoch"], groups["best"]
            loop.best = tuple(meta["best_score"])
        good_state = snapshot(eval_model)
        first_epoch = len(history) + 1
        if has_val and history and main:
            last_val = _evaluate_val(eval_model, val_images, val_labels, device, precision, config)
            if loop.best_state is not None:
                best_val = _evaluate_state(eval_model, loop.best_state, val_images, val_labels,
                                           device, precision, config, good_state)
    tally = _EpochTally(device)  # the epoch in progress

    def batches() -> Iterator[torch.Tensor]:
        for epoch in range(first_epoch, config.epochs + 1):
            if on_epoch_start:
                on_epoch_start(epoch, config.epochs, steps)
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new seeded order each epoch, the same on every rank
                perm = torch.tensor(list(sampler), dtype=torch.long, device=device)
            else:
                perm = torch.randperm(n, generator=shuffle).to(device)
            tally.start(epoch)
            for step in range(steps):
                yield perm[step * batch : (step + 1) * batch]

    def train_step(idx: torch.Tensor) -> None:
        step = tally.steps + 1
        if config.schedule != "constant":
            lr = lr_at(config, (tally.epoch - 1) * steps + step - 1, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if aug.enabled:
            xb = random_affine(xb, aug, augment_gen, fill=background).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = net(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema:
            ema.update()
        tally.add(loss, logits, yb)
        if on_step and (step % _PROGRESS_EVERY == 0 or step == steps):
            elapsed = time.perf_counter() - tally.started
            on_step(step, tally.loss_sum.item() / tally.seen, tally.correct.item() / tally.seen,
                    tally.seen * (dist.world if dist else 1) / max(elapsed, 1e-9))

    def end_epoch(_check: int) -> tuple[float, float] | None:
        nonlocal train_seconds, good_state, last_val
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - tally.started
        train_seconds += seconds
        loss_sum, correct, seen = tally.loss_sum.item(), tally.correct.item(), tally.seen
        if dist is not None:  # the epoch's figures over all ranks' shards
            totals = dist.sum_(torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device))
            loss_sum, correct, seen = totals[0].item(), totals[1].item(), int(totals[2].item())
        val = _evaluate_val(eval_model, val_images, val_labels, device, precision, config) \
            if has_val and main else None
        figures = (val.loss, val.accuracy) if val is not None else None
        if dist is not None and has_val:
            figures = dist.broadcast_floats(figures, 2)  # type: ignore[assignment]
        history.append(EpochRecord(
            epoch=tally.epoch, loss=loss_sum / seen, accuracy=correct / seen,
            val_loss=figures[0] if figures else None, val_accuracy=figures[1] if figures else None,
            seconds=seconds, images_per_s=seen / seconds,
        ))
        good_state = snapshot(eval_model)
        last_val = val
        return epoch_rank(history[-1])

    def after_epoch(state: LoopState, _score_: object) -> None:
        nonlocal best_val
        if state.best_check == state.checks:
            best_val = last_val
        if checkpoint is not None:
            rng = _rng_state(device, shuffle, augment_gen)
            rngs = dist.gather_states(rng) if dist is not None else [rng]  # every rank's streams, for resume
            if main:
                _save_checkpoint(checkpoint, config, model, optimizer, ema, state, history, train_seconds,
                                 rngs, processes=dist.world if dist else 0)
        if on_epoch_end:
            on_epoch_end(history[-1])

    try:
        run_loop(batches(), train_step, steps * (config.epochs - first_epoch + 1), check_every=steps, check=end_epoch,
                 kept=eval_model, keep_best=has_val and (config.keep_best or bool(config.patience)),
                 patience=config.patience, state=loop, after_check=after_epoch)
    except KeyboardInterrupt:
        interrupted = True
        eval_model.load_state_dict(good_state)
    best_epoch = None
    if config.keep_best and loop.best_state is not None:
        eval_model.load_state_dict(loop.best_state)
        best_epoch, last_val = loop.best_check, best_val
    eval_model.eval()
    return TrainResult(
        model=eval_model,
        config=config,
        history=history,
        device=str(device),
        precision=precision,
        interrupted=interrupted,
        val=last_val,
        train_seconds=train_seconds,
        best_epoch=best_epoch,
        stopped_early=loop.stopped,
    )


def _evaluate_val(model: nn.Module, images: Any, labels: Any, device: torch.device, precision: str,
                  config: TrainConfig) -> EvalResult:
    return evaluate(model, images, labels, device=device, precision=precision, batch_size=config.eval_batch_size)


def _evaluate_state(model: nn.Module, state: dict[str, torch.Tensor], images: Any, labels: Any,
                    device: torch.device, precision: str, config: TrainConfig,
                    restore: dict[str, torch.Tensor]) -> EvalResult:
    # Validation of stored weights (after a resume), leaving ``model`` as it was.
    model.load_state_dict(state)
    try:
        return _evaluate_val(model, images, labels, device, precision, config)
    finally:
        model.load_state_dict(restore)


def _save_checkpoint(path: str | os.PathLike[str], config: TrainConfig, model: nn.Module,
                     optimizer: torch.optim.Optimizer, ema: WeightEMA | None, loop: LoopState,
                     history: list[EpochRecord], train_seconds: float, rngs: list[dict[str, torch.Tensor]],
                     processes: int = 0) -> None:
    # ``rngs``: the random streams of each rank (one for a single-process run, ``processes`` = 0).
    opt_tensors, opt_rest = pack_optimizer(optimizer.state_dict())
    groups: dict[str, dict[str, torch.Tensor]] = {"model": model.state_dict(), "optimizer": opt_tensors,
                                                  "rng": rngs[0]}
    groups.update({f"rng{r}": state for r, state in enumerate(rngs) if r})
    if ema:
        groups["ema"] = ema.model.state_dict()
    if loop.best_state is not None:
        groups["best"] = loop.best_state
    meta = {
        "config": config.to_dict(),
        "optimizer": opt_rest,
        "ema_updates": ema.updates if ema else 0,
        "history": [dataclasses.asdict(r) for r in history],
        "train_seconds": train_seconds,
        "bad_epochs": loop.bad,
        "stopped_early": loop.stopped,
        "best_epoch": loop.best_check if loop.best_state is not None else None,
        "best_score": list(loop.best) if loop.best_state is not None else None,
    }
    if processes:
        meta["processes"] = processes
    save_train_state(path, groups, meta)


class _EpochTally:
    """Loss and accuracy of the epoch in progress, summed on the device (reading them back would sync every step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start(0)

    def start(self, epoch: int) -> None:
        self.epoch, self.steps, self.seen = epoch, 0, 0
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()
        self.seen += len(labels)
        self.steps += 1


def train(
    config: TrainConfig | None = None,
    *,
    data: MNIST | None = None,
    device: str | torch.device = "auto",
    callback: TrainCallback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    dist: Dist | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train on MNIST (or ``data``, any IDX dataset) with ``config`` (default: the notebook recipe), then test once.

    Keyword ``overrides`` replace config fields, e.g. ``train(epochs=1, seed=3)``. The
    validation split (``val_size`` images) is carved from the training set with ``seed``; the
    test set is evaluated once, at the end, and never used for any choice. ``checkpoint`` and
    ``resume`` are passed to :func:`fit`. With ``dist`` (a rank of a distributed run) the
    model trains on ``dist.device`` as DistributedDataParallel (see :func:`fit`); calibration
    and the test happen on rank 0 only, and the other ranks return their result untested.
    """
    try:
        config = dataclasses.replace(config or TrainConfig(), **overrides)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    mnist = data if data is not None else load_mnist()
    classes = len(mnist.class_names)
    if config.num_classes != classes:  # the dataset decides how many outputs the model has ...
        if config.num_classes != TrainConfig().num_classes:  # ... unless the recipe asks for its own number
            raise ConfigError(f"{mnist.name} has {classes} classes; this recipe has num_classes {config.num_classes}")
        config = dataclasses.replace(config, num_classes=classes,
                                     model_config={**config.model_config, "num_classes": classes})
    config.validate()
    dev = dist.device if dist is not None else resolve_device(device)
    images, labels = mnist.train_images, mnist.train_labels
    if config.limit:
        images, labels = images[: config.limit], labels[: config.limit]
    tx, ty, vx, vy = split_train_val(images, labels, config.val_size, config.seed)
    result = fit(config, tx, ty, device=dev, val_images=vx, val_labels=vy, callback=callback,
                 checkpoint=checkpoint, resume=resume, dist=dist)
    try:
        if dist is None or dist.is_main:  # rank 0 alone calibrates and tests
            _calibrate_and_test(result, mnist, vx, vy, dev)
    except KeyboardInterrupt:  # the trained model is still worth keeping, just untested
        result.interrupted = True
    result.class_names = tuple(mnist.class_names)
    result.dataset = {
        "name": mnist.name,
        "train_size": len(tx),
        "val_size": len(vx),
        "test_size": len(mnist.test_images),
        "sha256": dict(mnist.sha256),
    }
    return result


def _calibrate_and_test(result: TrainResult, mnist: MNIST, vx: np.ndarray, vy: np.ndarray,
                        device: torch.device) -> None:
    config = result.config
    if len(vx) and result.history:
        # Honest confidences: one temperature fitted on the validation split (argmax unchanged).
        logits = predict_logits(result.model, torch.from_numpy(np.ascontiguousarray(vx)), device=device,
                                precision=result.precision, batch_size=config.eval_batch_size)
        result.calibration = calibration_report(logits, torch.from_numpy(vy.astype(np.int64)))
    # At the stored temperature, so the recorded test loss is what `digitrec evaluate` reports.
    result.test = evaluate(
        result.model, mnist.test_images, mnist.test_labels, device=device,
        precision=result.precision, batch_size=config.eval_batch_size,
        temperature=result.calibration.temperature if result.calibration else 1.0,
    )
