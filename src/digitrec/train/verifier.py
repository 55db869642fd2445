"""Training the piece verifier: label the segmenter's candidates by forced alignment, then train a two-class net.

How reading uses the verifier, and why it exists: :mod:`digitrec.read.verifier`. Making one:

1. draw lines of 2-6 MNIST *training* digits (:func:`digitrec.data.synthetic.digit_line`, some
   gaps touching) and list every candidate the segmenter would consider;
2. label them by forced alignment: of the chains of candidates whose digits read as the true
   number, the best-scoring one's candidates are "one digit", all others are not (lines with
   no such chain are skipped);
3. train a small CNN on the candidates' 28x28 inputs with the project's training loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from digitrec.cfg.verifier import VerifierConfig
from digitrec.data.mnist import MNIST
from digitrec.data.preprocess import ink_map
from digitrec.data.synthetic import digit_line
from digitrec.errors import ConfigError
from digitrec.models.checkpoint import save_model
from digitrec.models.registry import model_config_dict
from digitrec.read.segment import Candidate, candidates
from digitrec.read.verifier import PIECE_CLASSES
from digitrec.train.engine import TrainCallback, TrainResult, fit

__all__ = ["align", "label_candidates", "train_verifier", "save_verifier", "make_verifier", "VerifierRun"]

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) inputs -> (N, 10) digit probabilities
Progress = Callable[[int, int], None]  # (lines done, lines in all)


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


@dataclasses.dataclass(frozen=True)
class VerifierRun:
    """A trained verifier and what it was trained on."""

    result: TrainResult  # the training run (model, history, held-out metrics)
    candidates: int  # labelled candidates trained on
    positive_fraction: float  # share of them that are one whole digit
    skipped_lines: int  # lines no chain of candidates read true

    def summary(self, path: Path) -> dict[str, object]:
        """The run as a JSON-ready dict (``path``: where the verifier was saved)."""
        return {"model": str(path), "candidates": self.candidates, "positive_fraction": self.positive_fraction,
                "skipped_lines": self.skipped_lines, **self.result.metrics()}


def make_verifier(config: VerifierConfig, digit_model: str, mnist: MNIST, out: str | Path, *,
                  device: torch.device, line_progress: Progress | None = None,
                  callback: TrainCallback | None = None) -> tuple[VerifierRun, Path | None]:
    """The whole pipeline: label candidates of MNIST *training* digits, train, save to ``out``.

    ``digit_model`` (a model file or bundled name) is the classifier the segmenter scores
    candidates with while labelling. Returns the run and the saved path (None when training
    was interrupted before its first epoch: nothing is written then).
    """
    from digitrec.infer.recogniser import load  # the recogniser sits above training in the layering

    config.validate()
    rec = load(digit_model, device=device, verifier=None, line_reader=None)
    # Training digits only: the test split stays unseen, for the robustness bench.
    inputs, targets, skipped = label_candidates(rec.predict_proba, mnist.train_images, mnist.train_labels,
                                                config, progress=line_progress)
    result = train_verifier(inputs, targets, config, device=device, callback=callback)
    run = VerifierRun(result, len(targets), float(targets.mean()), skipped)
    if not result.history:
        return run, None
    path = save_verifier(out, result, config, labelled_with=rec.name, candidates_count=run.candidates,
                         positive_fraction=run.positive_fraction, skipped_lines=skipped)
    return run, path
