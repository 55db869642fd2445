"""The digit-training recipe (``TrainConfig``): the reference notebook's by default."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from digitrec.cfg.base import MAX_SEED, PRECISIONS, option
from digitrec.errors import ConfigError

if TYPE_CHECKING:
    from digitrec.data.augment import AffineAugment

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. The defaults are the reference notebook's."""

    arch: str = option("seed", "registered architecture name (see 'digitrec models')")
    model_config: Mapping[str, Any] = option(default_factory=dict, help="overrides of the architecture's config",
                                             flag=False)
    epochs: int = option(10, "passes over the training split", low=1)
    batch_size: int = option(100, "images per optimiser step", low=1)
    lr: float = option(1e-3, "(peak) learning rate", above=0)
    seed: int = option(0, "seeds weight init, the validation split and shuffling", low=0, high=MAX_SEED - 1)
    val_size: int = option(5000, "training images held out for validation (0 = train on all)", low=0)
    limit: int = option(0, "train on the first N training images only, for quick runs (0 = all)", low=0)
    precision: str = option("auto", "compute precision; auto uses bf16 where the hardware runs it natively",
                            choices=PRECISIONS)
    eval_batch_size: int = option(100, "images per forward pass when evaluating (small batches stay in cache)",
                                  low=1, flag=False)
    optimizer: str = option("adam", "optimiser: adam, adamw (decoupled weight decay) or sgd (Nesterov, momentum 0.9)",
                            choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "L2 (adam, sgd) or decoupled (adamw) weight decay, per step", low=0)
    schedule: str = option("constant", "LR schedule: constant, onecycle (peak = lr) or cosine (to 0)",
                           choices=SCHEDULES)
    warmup: float = option(0.0, "fraction of all steps spent ramping the LR up (onecycle, cosine)", low=0, high=1)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing, 0..1", low=0, high=1)
    ema_decay: float = option(0.0, "decay of a moving average of the weights, e.g. 0.999 (0 = off); when on, "
                              "validation, selection and the saved model use the averaged weights", low=0, high=1)
    patience: int = option(0, "stop after N epochs without a better validation score (0 = never)", low=0)
    keep_best: bool = option(False, "end with the weights of the epoch with the best validation score")
    aug_rotate: float = option(0.0, "random rotation of training images, +- degrees (0 = off)", low=0)
    aug_shift: float = option(0.0, "random translation, +- pixels per axis", low=0)
    aug_scale: float = option(0.0, "random zoom, +- fraction (0.1 = 90%..110%)", low=0)
    aug_shear: float = option(0.0, "random horizontal shear, +- degrees", low=0)
    aug_elastic: float = option(0.0, "elastic distortion strength (alpha), pixels (0 = off; Simard et al.: 34)",
                                low=0)
    aug_elastic_sigma: float = option(4.0, "smoothness of the elastic distortion, Gaussian sigma, pixels", low=0)
    num_classes: int = option(10, "classes of the labels and the model's outputs (digits: 10; piece verifier: 2)",
                              low=2, flag=False)

    @property
    def augment(self) -> AffineAugment:
        """The augmentation ranges as one object (identity when all are zero)."""
        from digitrec.data.augment import AffineAugment  # torch; the config itself stays import-light

        return AffineAugment(self.aug_rotate, self.aug_shift, self.aug_scale, self.aug_shear,
                             self.aug_elastic, self.aug_elastic_sigma)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values of the wrong type or out of range.

        Also builds the architecture once and checks that it maps 28x28 images to ten
        classes, so a bad ``model_config`` fails before any data is loaded.
        """
        from digitrec.models.registry import check_model_output, create_model, get_model_spec  # needs torch

        if get_model_spec(self.arch).task != "digits":
            raise ConfigError(f"{self.arch!r} reads lines, not digits; train it with 'digitrec train-line-reader'")
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
        if self.precision not in PRECISIONS:
            raise ConfigError(f"invalid precision {self.precision!r} (use {', '.join(PRECISIONS)})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"invalid optimizer {self.optimizer!r} (use {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"invalid schedule {self.schedule!r} (use {', '.join(SCHEDULES)})")
        for name, high in (("weight_decay", math.inf), ("warmup", 1.0), ("label_smoothing", 1.0),
                           ("ema_decay", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high \
                    or not math.isfinite(value) or (name == "ema_decay" and value >= 1):
                limit = "in [0, 1)" if name == "ema_decay" else ">= 0" if high == math.inf else "in [0, 1]"
                raise ConfigError(f"{name.replace('_', ' ')} must be a number {limit}, got {value!r}")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise ConfigError(f"patience must be an integer >= 0, got {self.patience!r}")
        if not isinstance(self.keep_best, bool):
            raise ConfigError(f"keep_best must be true or false, got {self.keep_best!r}")
        if (self.patience or self.keep_best) and self.val_size == 0:
            raise ConfigError("early stopping and keep_best need a validation split (val_size > 0)")
        try:
            self.augment.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        check_model_output(create_model(self.arch, dict(self.model_config)), num_classes=self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the model file)."""
        d = dataclasses.asdict(self)
        d["model_config"] = dict(self.model_config)
        return d
