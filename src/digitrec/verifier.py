"""The piece verifier: is a candidate cut from a line of digits one whole digit?

Reading a number (:mod:`digitrec.numbers`) cuts a line into pieces and tries every run of
neighbouring pieces as a digit. A digit classifier answers "which digit" confidently even for
two touching digits run together (an "8" with a "1" stuck to it still looks most like an "8")
or for part of a digit, because it never saw such inputs. The verifier is a second, two-class
model trained for exactly that question, on the segmenter's own candidates:

1. draw lines of 2-6 MNIST *training* digits (:func:`digitrec.synthetic.digit_line`, some
   gaps touching) and list every candidate the segmenter would consider;
2. label them by forced alignment: of the chains of candidates whose digits read as the true
   number, the best-scoring one's candidates are "one digit", all others are not (lines with
   no such chain are skipped);
3. train a small CNN on the candidates' 28x28 inputs with the project's training engine.

When reading, each candidate also scores the log of the verifier's "one digit" probability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import ModelFile, packaged_file, save_model
from .errors import ConfigError, ModelFileError
from .evaluate import predict_logits
from .models import model_config_dict
from .numbers import Candidate, WholeDigit, candidates
from .preprocess import ink_map
from .synthetic import digit_line

if TYPE_CHECKING:  # the training engine loads only to train, not to read numbers
    from .train import TrainCallback, TrainConfig, TrainResult

__all__ = [
    "PIECE_CLASSES",
    "VerifierConfig",
    "align",
    "label_candidates",
    "train_verifier",
    "save_verifier",
    "bundled_verifier",
    "whole_digit_scorer",
]

PIECE_CLASSES = ["not one digit", "one digit"]  # the verifier's class names, in logit order

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) inputs -> (N, 10) digit probabilities
Progress = Callable[[int, int], None]  # (lines done, lines in all)


@dataclass(frozen=True)
class VerifierConfig:
    """How the verifier's training candidates are made and how it is trained."""

    lines: int = 6000  # synthetic lines of 2-6 training digits cut into candidates
    touching: tuple[float, ...] = (0.0, 0.17, 0.35)  # fraction of touching gaps; one value drawn per line
    seed: int = 0  # seeds the lines, the held-out candidates and training
    arch: str = "fast"  # registered architecture, built with two output classes
    epochs: int = 8  # passes over the candidates
    batch_size: int = 128  # candidates per optimiser step
    lr: float = 2e-3  # peak learning rate of one-cycle Adam
    val_fraction: float = 0.1  # candidates held out to report the verifier's accuracy
    model_config: dict[str, Any] = field(default_factory=dict)  # overrides of the arch's config

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
        from .train import TrainConfig

        return TrainConfig(
            arch=self.arch, model_config={**self.model_config, "num_classes": 2}, epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, seed=self.seed, val_size=0, schedule="onecycle",
            warmup=0.25, num_classes=2,
        )


def align(cands: Sequence[Candidate], digits: Sequence[int], count: int, probs: np.ndarray) -> set[int] | None:
    """Indices of the candidates that make up the true reading, or None if no chain reads true.

    Among the chains of candidates covering pieces 0..count-1 in order with one candidate per
    true digit, each read (argmax of ``probs``, one row per candidate) as that digit, the one
    with the highest total score (forced alignment by dynamic programming).
    """
    n = len(digits)
    best = np.full((count + 1, n + 1), -np.inf)
    best[0, 0] = 0.0
    back: dict[tuple[int, int], tuple[int, int, int]] = {}
    reads = probs.argmax(axis=1)
    for k in sorted(range(len(cands)), key=lambda k: cands[k].start):
        c = cands[k]
        for t in range(n):
            if reads[k] == digits[t] and best[c.start, t] + c.score > best[c.end, t + 1]:
                best[c.end, t + 1] = best[c.start, t] + c.score
                back[(c.end, t + 1)] = (k, c.start, t)
    if not np.isfinite(best[count, n]):
        return None
    chosen, state = set(), (count, n)
    while state != (0, 0):
        k, start, t = back[state]
        chosen.add(k)
        state = (start, t)
    return chosen


def label_candidates(
    probabilities: Probabilities,
    images: np.ndarray,
    labels: np.ndarray,
    config: VerifierConfig,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Training candidates from ``config.lines`` synthetic lines of ``images`` (uint8 digits).

    Returns the candidates' inputs (N, 28, 28) uint8, their labels (N,) int64 (1 = one whole
    digit) and the number of lines skipped because no chain of candidates read true.
    ``probabilities`` is the digit classifier the segmenter scores with (a recogniser's
    ``predict_proba``).
    """
    config.validate()
    if len(images) < 6 or len(images) != len(labels):
        raise ConfigError(f"need at least 6 digit images with one label each (got {len(images)} images, "
                          f"{len(labels)} labels)")
    rng = np.random.default_rng(config.seed)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    skipped = 0
    for i in range(config.lines):
        k = int(rng.integers(2, 7))
        idx = rng.choice(len(images), k, replace=False)
        touching = float(rng.choice(config.touching))
        line = digit_line([images[j] for j in idx], int(rng.integers(2**62)), touching=touching)
        seen: list[np.ndarray] = []  # the digit probabilities of the candidates (one batch)

        def confidence(x: np.ndarray, seen: list[np.ndarray] = seen) -> np.ndarray:
            seen.append(probabilities(x))
            return seen[-1].max(axis=1)

        cands, count = candidates(ink_map(line), confidence)
        probs = np.concatenate(seen) if seen else np.zeros((0, 10), np.float32)
        if len(probs) != len(cands):
            raise RuntimeError(f"{len(probs)} probability rows for {len(cands)} candidates")
        chosen = align(cands, [int(labels[j]) for j in idx], count, probs) if cands else None
        if chosen is None:
            skipped += 1
        else:
            xs.extend(np.rint(c.input * 255).astype(np.uint8) for c in cands)
            ys.extend(int(k in chosen) for k in range(len(cands)))
        if progress is not None:
            progress(i + 1, config.lines)
    if not xs:
        raise ConfigError("no line could be read true; nothing to train the verifier on")
    return np.stack(xs), np.asarray(ys, np.int64), skipped


def train_verifier(
    inputs: np.ndarray,
    targets: np.ndarray,
    config: VerifierConfig,
    *,
    device: torch.device,
    callback: TrainCallback | None = None,
) -> TrainResult:
    """Train the two-class verifier on labelled candidates; a seeded share is held out for its accuracy."""
    from .train import fit

    config.validate()
    order = np.random.default_rng(config.seed).permutation(len(inputs))
    n_val = max(1, int(round(config.val_fraction * len(inputs))))
    if n_val >= len(inputs):
        raise ConfigError(f"{len(inputs)} candidates are too few to hold out {n_val} for validation")
    val, train = order[:n_val], order[n_val:]
    return fit(config.train_config(), inputs[train], targets[train], device=device,
               val_images=inputs[val], val_labels=targets[val], callback=callback)


def save_verifier(path: str | Path, result: TrainResult, config: VerifierConfig, *, labelled_with: str,
                  candidates_count: int, positive_fraction: float, skipped_lines: int) -> Path:
    """Write the verifier's model file (atomically) with how it was made; returns the path."""
    model = result.model
    model_config = model_config_dict(model)
    metrics = result.metrics()
    extra = {
        "role": "piece verifier",
        "verifier_config": {**dataclasses.asdict(config), "touching": list(config.touching)},
        "labelled_with": labelled_with,
        "candidates": candidates_count,
        "positive_fraction": positive_fraction,
        "skipped_lines": skipped_lines,
        "metrics": {k: metrics[k] for k in ("val_accuracy", "val_loss", "train_seconds") if k in metrics},
        "history": [dataclasses.asdict(r) for r in result.history],
    }
    return save_model(path, model, config.arch, model_config, class_names=list(PIECE_CLASSES), extra=extra)


def bundled_verifier() -> Path | None:
    """The verifier shipped inside the package, or None if this installation has none."""
    return packaged_file("verifier", "pieces.safetensors")


def whole_digit_scorer(verifier: ModelFile, device: torch.device, precision: str = "fp32") -> WholeDigit:
    """A function giving, for (N, 28, 28) [0, 1] inputs, the probability that each is one whole digit."""
    if verifier.class_names != PIECE_CLASSES:
        raise ModelFileError(f"{verifier.path}: not a piece verifier (classes {verifier.class_names})")

    def whole(inputs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        logits = predict_logits(verifier.model, x, device=device, precision=precision, batch_size=256,
                                normalization=verifier.normalization)
        return logits.float().softmax(dim=1)[:, 1].cpu().numpy()

    return whole
