"""The piece-verifier recipe (``VerifierConfig``): candidates cut from generated lines, a two-class network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from digitrec.cfg.base import MAX_SEED, option
from digitrec.cfg.train import TrainConfig
from digitrec.errors import ConfigError

__all__ = ["VerifierConfig"]


@dataclass(frozen=True)
class VerifierConfig:
    """How the verifier's training candidates are made and how it is trained."""

    lines: int = option(6000, "synthetic lines of 2-6 training digits cut into candidates", low=1)
    touching: tuple[float, ...] = option((0.0, 0.17, 0.35), "fraction of touching gaps; one value drawn per line",
                                         flag=False)
    seed: int = option(0, "seeds the lines, the held-out candidates and training", low=0, high=MAX_SEED - 1)
    arch: str = option("fast", "registered architecture, built with two output classes")
    epochs: int = option(8, "passes over the candidates", low=1)
    batch_size: int = option(128, "candidates per optimiser step", low=1)
    lr: float = option(2e-3, "peak learning rate of one-cycle Adam", above=0)
    val_fraction: float = option(0.1, "share of the candidates held out to report the verifier's accuracy",
                                 above=0, high=1)
    model_config: dict[str, Any] = option(default_factory=dict, help="overrides of the arch's config", flag=False)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
        for name in ("lines", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"verifier {name.replace('_', ' ')} must be an integer >= 1, got {value!r}")
        if not self.touching or any(not 0.0 <= t <= 1.0 for t in self.touching):
            raise ConfigError(f"touching fractions must lie in [0, 1], got {self.touching!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val fraction must be in (0, 1), got {self.val_fraction!r}")
        self.train_config().validate()

    def train_config(self) -> TrainConfig:
        """The training recipe for the two-class network."""
        return TrainConfig(
            arch=self.arch, model_config={**self.model_config, "num_classes": 2}, epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, seed=self.seed, val_size=0, schedule="onecycle",
            warmup=0.25, num_classes=2,
        )
