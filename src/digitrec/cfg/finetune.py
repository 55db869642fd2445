"""The fine-tuning recipe (``FinetuneConfig``); open fields take defaults per kind of data."""

from __future__ import annotations

import math
from dataclasses import dataclass

from digitrec.cfg.base import PRECISIONS, option
from digitrec.errors import ConfigError

__all__ = ["FinetuneConfig", "KIND_DEFAULTS", "KEEP"]

KEEP = ("last", "best")  # FinetuneConfig.keep's choices

# The recipe's fields left open (None) take these, per kind of data; chosen on ORAND-CAR-A
# shares (docs/finetune.md): a digit model forgets MNIST faster than the reader forgets its
# generated lines, and its replayed digits cost little to train on.
KIND_DEFAULTS: dict[str, dict[str, float]] = {"numbers": {"replay": 0.1, "lr": 2e-3},
                                              "digits": {"replay": 3.0, "lr": 5e-4}}


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning recipe. The defaults were chosen on shares of ORAND-CAR-A (docs/finetune.md)."""

    epochs: int = option(60, "passes over the training share (fewer with --patience)", low=1)
    batch_size: int = option(32, "user images per optimiser step (replayed ones come on top)", low=1)
    lr: float | None = option(None, "peak learning rate (AdamW, one-cycle schedule; default: 2e-3 for numbers, "
                              "5e-4 for digits)", above=0)
    weight_decay: float = option(0.01, "AdamW's decoupled weight decay", low=0)
    val_size: float = option(0.1, "share of the images held out (seeded) to check the weights kept (see keep), "
                             "0 < share < 1", above=0, high=1)
    seed: int = option(0, "seeds the validation split, shuffling, augmentation, replay", low=0)
    patience: int = option(0, "stop after this many epochs without a better validation score (0: never; keep "
                           "still decides which weights are kept)", low=0)
    replay: float | None = option(None, "images made from MNIST training digits (generated lines or digits) mixed "
                                  "in per user image, so the model keeps what it knew (0: none; default: 0.1 for "
                                  "numbers, 3 for digits)", low=0, high=4)
    keep: str = option("last", "which weights are kept: last (the end of the schedule, unless they read the "
                       "validation share worse than the start: then the start) or best (the epoch that read it best)",
                       choices=KEEP)
    ema: float = option(0.0, "decay of a moving average of the weights per step, which is what is validated and "
                        "kept (0: off)", low=0, high=1)
    augment: bool = option(True, "vary the images as scans vary (width, slant, margins, contrast, blur, noise)")
    precision: str = option("auto", "compute precision; auto uses bf16 where the hardware runs it natively",
                            choices=PRECISIONS)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("patience", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer >= {low}, got {value!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)) \
                or not 0.0 <= self.weight_decay < math.inf:
            raise ConfigError("lr must be > 0 and weight decay >= 0")
        if not 0.0 < self.val_size < 1.0:
            raise ConfigError(f"val size must be a share between 0 and 1 (0.1 = 10%), got {self.val_size}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if self.replay is not None and not 0.0 <= self.replay <= 4.0:
            raise ConfigError(f"replay must be between 0 and 4 replayed images per user image, got {self.replay}")
        if self.keep not in KEEP:
            raise ConfigError(f"invalid keep {self.keep!r} (use {', '.join(KEEP)})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"invalid precision {self.precision!r} (use {', '.join(PRECISIONS)})")
