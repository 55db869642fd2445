"""The line-reader training recipe (``LineTrainConfig``): lines made on the fly from MNIST training digits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from digitrec.cfg.base import MAX_SEED, PRECISIONS, option
from digitrec.errors import ConfigError

__all__ = ["LineTrainConfig", "LINE_KINDS"]

LINE_KINDS = ("paper", "ink")  # what a line reader is trained on: grey lines on paper, or binarised ink


@dataclass(frozen=True)
class LineTrainConfig:
    """How a line reader is trained (on lines made from MNIST training digits)."""

    steps: int = option(8000, "optimiser steps (one batch of freshly made lines each)", low=1)
    batch_size: int = option(64, "lines per step", low=1)
    max_digits: int = option(7, "lines hold 1 to this many digits", low=1)
    touching: tuple[float, ...] = option((0.0, 0.2, 0.4, 0.7), "share of touching gaps (ink lines only); one "
                                         "drawn per line", flag=False)
    lr: float = option(3e-3, "peak learning rate of one-cycle AdamW", above=0)
    weight_decay: float = option(1e-2, "decoupled weight decay", low=0)
    warmup: float = option(0.15, "fraction of the steps spent warming up", low=0, high=1)
    clip: float = option(5.0, "largest gradient norm applied (larger ones are scaled down to it)", above=0)
    ema: float = option(0.0, "decay per step of the moving average of the weights that becomes the reader "
                        "(0: the last step's weights)", low=0, high=0.99999)
    init: str = option("", "a line reader file whose weights training starts from (empty: random weights); "
                       "its architecture and model config are used")
    val_size: int = option(5000, "training digits held out (seeded) and used only for the validation lines", low=1)
    val_lines: int = option(1000, "validation lines made from the held-out digits", low=1)
    seed: int = option(0, "seeds the held-out split, the lines and the weights", low=0, high=MAX_SEED - 1)
    arch: str = option("line-crnn", "registered line architecture (see 'digitrec models')")
    lines: str = option("paper", "what to train on: grey lines on simulated paper (the default reader) or "
                        "binarised ink", choices=LINE_KINDS)
    workers: int = option(1, "processes making lines while the model trains (0: in the training process)", low=0)
    precision: str = option("auto", "compute precision; auto uses bf16 where the hardware runs it natively",
                            choices=PRECISIONS)
    model_config: dict[str, Any] = option(default_factory=dict, help="overrides of the arch's config", flag=False)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
        from digitrec.models.registry import list_models  # needs torch

        for name in ("steps", "batch_size", "max_digits", "val_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"line reader {name.replace('_', ' ')} must be an integer >= 1, got {value!r}")
        if isinstance(self.val_size, bool) or not isinstance(self.val_size, int) or self.val_size < self.max_digits:
            raise ConfigError(f"line reader val size must be an integer >= max digits ({self.max_digits}), "
                              f"got {self.val_size!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"line reader workers must be an integer >= 0, got {self.workers!r}")
        if not self.touching or any(not 0.0 <= t <= 1.0 for t in self.touching):
            raise ConfigError(f"touching fractions must lie in [0, 1], got {self.touching!r}")
        if self.lines not in LINE_KINDS:
            raise ConfigError(f"line reader lines must be one of {', '.join(LINE_KINDS)}, got {self.lines!r}")
        if self.arch not in list_models("lines"):
            raise ConfigError(f"{self.arch!r} is not a line reader; available: {', '.join(list_models('lines'))}")
        if self.model_config.get("num_classes", 11) != 11:
            raise ConfigError("a line reader has 11 classes (the CTC blank and ten digits)")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0.0 <= self.weight_decay < math.inf \
                or not 0.0 <= self.warmup < 1.0 or not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError("lr must be > 0, weight decay >= 0, warmup in [0, 1) and clip > 0")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"line reader ema must be a decay in [0, 1), got {self.ema!r}")
        if not isinstance(self.init, str):
            raise ConfigError(f"line reader init must be a model file path (or empty), got {self.init!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"invalid precision {self.precision!r} (use {', '.join(PRECISIONS)})")
