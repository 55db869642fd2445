"""Optimisers, the learning-rate schedule and a moving average of the weights, for the training loops."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from digitrec.cfg.train import TrainConfig

__all__ = ["lr_at", "make_optimizer", "snapshot", "WeightEMA"]

_ONECYCLE_START_DIV = 25.0  # one-cycle starts at lr / 25 (as torch's OneCycleLR)
_ONECYCLE_END_DIV = 1e4  # ... and ends at (lr / 25) / 1e4


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate for optimiser step ``step`` (0-based) of ``total_steps``.

    A pure function of the step, so resuming only needs the step count.
    """
    if config.schedule == "constant":
        return config.lr
    t = min(step / max(total_steps - 1, 1), 1.0)
    warm = config.warmup

    def cosine(start: float, end: float, frac: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2

    if config.schedule == "onecycle":
        low = config.lr / _ONECYCLE_START_DIV
        if t < warm:
            return cosine(low, config.lr, t / warm)
        return cosine(config.lr, low / _ONECYCLE_END_DIV, (t - warm) / max(1 - warm, 1e-12))
    # cosine: linear warm-up, then cosine decay to zero
    if t < warm:
        return config.lr * (step + 1) / max(round(warm * total_steps), 1)
    return cosine(config.lr, 0.0, (t - warm) / max(1 - warm, 1e-12))


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # One fused (CUDA) or multi-tensor (CPU) kernel per step instead of one per parameter.
    kernel: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    params = model.parameters()
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **kernel)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay, **kernel)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **kernel)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class WeightEMA:
    """An exponential moving average of a model's parameters and BatchNorm statistics.

    The decay warms up as min(decay, (1 + t) / (10 + t)) so early, random weights fade fast
    in short runs. Integer buffers (BN's batch counters) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # state_dict() tensors share storage with the live weights, so these lists, built once,
        # follow every optimiser step (update() runs once per step: nothing rebuilt there).
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._float_ema = [e for e, _ in pairs if e.is_floating_point()]
        self._float_src = [s for e, s in pairs if e.is_floating_point()]
        self._int_pairs = [(e, s) for e, s in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._float_ema, self._float_src, 1 - d)
        for e, s in self._int_pairs:
            e.copy_(s)
