"""Training line readers (CTC) on lines made on the fly from MNIST training digits, and their calibration."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from digitrec.cfg.lines import LineTrainConfig
from digitrec.data.mnist import split_train_val
from digitrec.data.paper import NO_DIGITS, line_digits, render_line
from digitrec.data.preprocess import NORMALIZATION, Normalization, normalize
from digitrec.errors import ConfigError, DigitrecError, first_line
from digitrec.models.checkpoint import load_model, save_model, write_metadata
from digitrec.models.registry import LINE_HEIGHT, LINE_STRIDE, create_model, model_config_dict
from digitrec.read.lineprep import line_input
from digitrec.read.linereader import (
    BLANK,
    DIGIT_HEIGHT,
    LINE_CLASSES,
    LINE_PAD,
    fit_blank_penalty,
    string_log_prob,
)
from digitrec.runtime import autocast, resolve_precision
from digitrec.train.loop import LoopState, run_loop
from digitrec.train.optim import WeightEMA, snapshot

__all__ = [
    "compose_line",
    "pack_lines",
    "render_training_line",
    "ctc_step",
    "fit_ctc",
    "CTCRun",
    "validation_lines",
    "fit_line_temperature",
    "calibration",
    "train_line_reader",
    "calibrate_line_reader_file",
    "save_line_reader",
]

# --- training lines -------------------------------------------------------------------------------


def _ink_bounds(glyph: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last inked column of each of ``rows`` (0 where a row has none)."""
    inked = glyph[rows] > 0.3
    first = np.where(inked.any(axis=1), inked.argmax(axis=1), 0)
    last = np.where(inked.any(axis=1), glyph.shape[1] - 1 - inked[:, ::-1].argmax(axis=1), 0)
    return first, last


def compose_line(images: np.ndarray, rng: np.random.Generator, touching: float) -> np.ndarray:
    """A line of the MNIST digits ``images`` ((n, 28, 28) uint8) as the line reader sees lines.

    Each digit is cropped to its ink, rescaled to about ``DIGIT_HEIGHT`` (±15%, width ±15%
    more), sometimes with a broken stroke, and placed right of the previous ones with a gap
    measured row by row between the inks, as a writer spaces digits: a fraction ``touching``
    of the gaps are 0 to 2 pixels of overlap, the others 1 to 13 pixels. The whole line is
    sometimes drawn with a thicker or thinner pen or blurred. Returns (LINE_HEIGHT, W) float32.
    """
    # Its own composer rather than synthetic.digit_line (which builds the bench's lines): the
    # bench then measures the line reader on a generator it was never trained on.
    pieces = []
    for digit in images:
        d = digit.astype(np.float32) / 255.0
        if rng.random() < 0.1:  # a broken stroke: a one-pixel gap across the digit
            d[int(rng.integers(8, 20))] = 0.0
        rows, cols = np.flatnonzero(d.max(axis=1) > 0), np.flatnonzero(d.max(axis=0) > 0)
        if rows.size:
            d = d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        scale = rng.uniform(0.85, 1.15) * DIGIT_HEIGHT / max(d.shape[0], 12)
        size = (max(1, round(d.shape[1] * scale * rng.uniform(0.85, 1.15))), max(1, round(d.shape[0] * scale)))
        d = np.clip(np.asarray(Image.fromarray(d, mode="F").resize(size, Image.Resampling.BILINEAR)), 0.0, 1.0)
        pieces.append(d[:LINE_HEIGHT])
    canvas = np.zeros((LINE_HEIGHT, sum(p.shape[1] for p in pieces) + 16 * len(pieces) + 2 * LINE_PAD), np.float32)
    right = np.full(LINE_HEIGHT, -(10**6))  # rightmost ink column so far, per row
    x = LINE_PAD
    for i, p in enumerate(pieces):
        top = int(np.clip(round((LINE_HEIGHT - p.shape[0]) / 2 + rng.normal(0.0, 1.2)), 0, LINE_HEIGHT - p.shape[0]))
        rows = np.flatnonzero(p.max(axis=1) > 0.3)
        if rows.size == 0:
            rows = np.arange(p.shape[0])
        first, last = _ink_bounds(p, rows)
        if i > 0:
            gap = int(rng.integers(-2, 1)) if rng.random() < touching else int(rng.uniform(1, 14))
            x = max(int(np.max(right[top + rows] - first)) + 1 + gap, 1)
        region = canvas[top : top + p.shape[0], x : x + p.shape[1]]
        np.maximum(region, p[:, : region.shape[1]], out=region)
        right[top + rows] = np.maximum(right[top + rows], x + last)
    canvas = canvas[:, : int(right.max()) + 1 + LINE_PAD]
    if rng.random() < 0.3:  # another pen
        if rng.random() < 0.6:
            canvas = ndimage.grey_dilation(canvas, size=(2, 2))
        else:
            canvas = ndimage.grey_erosion(canvas, size=(2, 1))
    if rng.random() < 0.3:
        canvas = ndimage.gaussian_filter(canvas, float(rng.uniform(0.3, 0.9)))
    return canvas


def _ink_line(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, touching: float) -> np.ndarray:
    """A binarised-ink training line (``lines="ink"``), as the segmenter's ink reaches the reader."""
    return compose_line(images, rng, touching)


def _paper_line(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, touching: float) -> np.ndarray:
    """A grey training line (``lines="paper"``), prepared exactly as :meth:`LineReader.read_grey` prepares pictures."""
    return line_input(render_line(images, labels, rng)).image


def _batch(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int, max_digits: int,
           touching: Sequence[float], lines: str = "ink",
           by_class: Sequence[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """``size`` lines of one random length (little padding): (x, targets, target lengths, frames).

    Grey lines hold no digit with probability ``paper.NO_DIGITS`` (the CTC target is then empty).
    Given ``by_class`` (the indices of ``images`` of each digit 0-9), a grey line's number is
    drawn by :func:`paper.line_digits` and its digits' images from those classes; else the
    images are drawn at random and their labels make the number.
    """
    count = int(rng.integers(1, max_digits + 1))
    make = _paper_line if lines == "paper" else _ink_line
    out: list[tuple[np.ndarray, str]] = []
    for _ in range(size):
        n = 0 if lines == "paper" and rng.random() < NO_DIGITS else count
        if lines == "paper" and by_class is not None:  # the number first, then a writer's image of each digit
            idx = np.array([c[rng.integers(0, len(c))] for c in (by_class[d] for d in line_digits(n, rng))], np.int64)
        else:
            idx = rng.integers(0, len(images), n)
        out.append((make(images[idx], labels[idx], rng, float(rng.choice(touching))),
                    "".join(str(int(d)) for d in labels[idx])))
    return pack_lines(out)


def pack_lines(lines: Sequence[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """(line image, digits) pairs -> one CTC batch: (x, targets, target lengths, frames).

    Lines are padded on the right with black to the widest (a multiple of ``LINE_STRIDE``).
    """
    width = -(-max(image.shape[1] for image, _ in lines) // LINE_STRIDE) * LINE_STRIDE
    x = np.zeros((len(lines), 1, LINE_HEIGHT, width), np.float32)
    for i, (image, _) in enumerate(lines):
        x[i, 0, :, : image.shape[1]] = image
    frames = torch.tensor([image.shape[1] // LINE_STRIDE for image, _ in lines])
    targets = [int(d) + 1 for _, text in lines for d in text]
    return (torch.from_numpy(x), torch.tensor(targets, dtype=torch.long),
            torch.tensor([len(text) for _, text in lines], dtype=torch.long), frames)


def render_training_line(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                         max_digits: int = 7) -> tuple[np.ndarray, str]:
    """One grey training line of 1-``max_digits`` random digits of ``images``, prepared: (line image, digits)."""
    idx = rng.integers(0, len(images), int(rng.integers(1, max_digits + 1)))
    return _paper_line(images[idx], labels[idx], rng, 0.0), "".join(str(int(d)) for d in labels[idx])


def ctc_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device,
             precision: str, norm: Normalization = NORMALIZATION, clip: float = 5.0) -> float:
    """One optimiser step of CTC training on a packed batch (:func:`pack_lines`); returns the loss."""
    x, targets, target_lengths, frames = batch
    with autocast(device, precision):
        logits = model(normalize(x.to(device), norm))
    logp = logits.float().log_softmax(dim=1).permute(2, 0, 1)  # (T, B, 11)
    loss = F.ctc_loss(logp, targets.to(device), frames.to(device), target_lengths.to(device), blank=BLANK,
                      zero_infinity=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # CTC through an LSTM has rare huge gradients (a line that barely fits its frames).
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.item())


class _Lines(torch.utils.data.IterableDataset):
    """An endless stream of training batches; each data-loading process draws its own lines."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, config: LineTrainConfig) -> None:
        self.images, self.labels, self.config = images, labels, config
        by_class = [np.flatnonzero(labels == d) for d in range(10)]
        self.by_class = by_class if all(c.size for c in by_class) else None  # a tiny set may lack a digit

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.config.seed, 2, info.id if info is not None else 0])
        c = self.config
        while True:
            yield _batch(self.images, self.labels, rng, c.batch_size, c.max_digits, c.touching, c.lines, self.by_class)


# --- decoding -----------------------------------------------------------------------------------------


Progress = Callable[[int, int, float], None]  # (steps done, steps in all, last loss)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # a packed CTC batch: x, targets, lengths, frames


def _line_logits(model: torch.nn.Module, lines: Sequence[tuple[np.ndarray, str]],
                 device: torch.device) -> list[torch.Tensor]:
    """Each line's (T, 11) frame logits, read alone (as ``read`` reads one picture)."""
    model.eval()
    logits = []
    for image, _ in lines:
        x = torch.from_numpy(image)[None, None].to(device)
        with torch.inference_mode():
            logits.append(model(normalize(x, NORMALIZATION)).float()[0].T.cpu())  # (T, 11)
    return logits


def fit_line_temperature(model: torch.nn.Module, lines: Sequence[tuple[np.ndarray, str]],
                         device: torch.device) -> tuple[float, float, float]:
    """The logit temperature minimising the CTC NLL of the true strings of ``lines``: (T, NLL at 1, NLL at T).

    The reading (the best path) does not change with it; the string and digit probabilities do.
    """
    return _fit_temperature(_line_logits(model, lines, device), [truth for _, truth in lines])


def _fit_temperature(logits: Sequence[torch.Tensor], truths: Sequence[str]) -> tuple[float, float, float]:
    def nll(t: float) -> float:
        total = 0.0
        for z, truth in zip(logits, truths):
            lp = (z / t).log_softmax(dim=1).numpy()
            total -= max(string_log_prob(lp, truth), -50.0)  # an impossible line counts as a sure miss
        return total / max(len(truths), 1)

    # A unimodal 1-D search on log T (golden section), from 0.25 to 4.
    lo, hi = math.log(0.25), math.log(4.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(math.exp(a)), nll(math.exp(b))
    for _ in range(18):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(math.exp(b))
    t = math.exp((lo + hi) / 2)
    return t, nll(1.0), nll(t)


Snapshot = Callable[[int, float, torch.nn.Module], None]  # (steps done, training seconds, model in eval mode)


def validation_lines(config: LineTrainConfig, images: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """``config.val_lines`` (line image, digits) pairs made from the held-out digits ``images`` (seeded)."""
    rng = np.random.default_rng([config.seed, 1])
    make = _paper_line if config.lines == "paper" else _ink_line
    val = []
    for i in range(config.val_lines):
        idx = rng.choice(len(images), 1 + i % config.max_digits, replace=False)
        touching = config.touching[i % len(config.touching)]
        val.append((make(images[idx], labels[idx], rng, touching), "".join(str(int(labels[j])) for j in idx)))
    return val


@dataclass
class CTCRun:
    """What :func:`fit_ctc` ends with."""

    # The weights to keep: the best checked ones, the last checked ones (keep_last) or the start's;
    # without checks, those at the end.
    state: dict[str, torch.Tensor]
    best_check: int  # the check (1, 2, ...) that scored best; 0: none beat the start, or no checks
    kept_check: int  # the check whose weights ``state`` holds (0: the starting weights, or no checks)
    checks: int  # checks made (fewer than planned when patience stopped the run)
    losses: list[float]  # the CTC loss of every step
    seconds: float  # wall time of the steps and checks


def fit_ctc(model: torch.nn.Module, batches: Iterable[Batch], steps: int, *, lr: float, weight_decay: float,
            warmup: float, clip: float, device: torch.device, precision: str,
            norm: Normalization = NORMALIZATION, ema_decay: float = 0.0, check_every: int = 0,
            check: Callable[[torch.nn.Module], float] | None = None, baseline: float = -math.inf,
            patience: int = 0, on_step: Callable[[int, float], None] | None = None,
            on_check: Callable[[int, float, float], None] | None = None,
            on_weights: Callable[[int, torch.nn.Module], None] | None = None, weights_every: int = 0,
            keep_last: bool = False) -> CTCRun:
    """CTC training, for line readers from scratch and for fine-tuning them: AdamW, one-cycle LR, clipping.

    The steps and checks run on the project's one training loop (:func:`digitrec.train.loop.run_loop`).

    Runs ``steps`` optimiser steps over ``batches`` (packed by :func:`pack_lines`). Every
    ``check_every`` steps, ``check`` scores the weights (the moving average with ``ema_decay``)
    and the best-scoring ones are kept, the starting weights scoring ``baseline``; ``patience``
    checks without a better score stop the run. With ``keep_last``, the weights of the last check
    are kept instead, unless they score below ``baseline`` (then the starting weights are): on a
    small validation share the best of many noisy checks is mostly luck, while the end of the
    one-cycle schedule is where the weights settle. ``on_step(step, loss)`` follows every step and
    ``on_check(check, mean loss since the last check, score)`` every check;
    ``on_weights(step, weights)`` is given the weights that would be kept (the moving average,
    in eval mode) every ``weights_every`` steps before the last, to measure them elsewhere; it
    must not change them.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=max(steps, 1),
                                                   pct_start=max(warmup, 1e-3))
    ema = WeightEMA(model, ema_decay) if ema_decay else None
    kept = ema.model if ema is not None else model  # the weights checked and kept
    losses: list[float] = []

    def step(batch: Batch) -> None:
        losses.append(ctc_step(model, optimizer, batch, device, precision, norm, clip))
        schedule.step()
        if ema is not None:
            ema.update()
        if on_step is not None:
            on_step(len(losses), losses[-1])
        if on_weights is not None and weights_every and len(losses) % weights_every == 0 and len(losses) < steps:
            on_weights(len(losses), kept.eval())
            model.train()

    def score(_check: int) -> float:
        assert check is not None  # run_loop calls this only when there is a check
        result = check(kept)
        model.train()
        return result

    last: list[Any] = [baseline, None]  # keep_last: the last check's score and the weights it scored

    def report(state: LoopState, result: float) -> None:
        if keep_last:
            last[:] = [result, snapshot(kept)]
        if on_check is not None:
            on_check(state.checks, float(np.mean(losses[-check_every:])), result)

    start = time.perf_counter()
    model.train()
    if check is None:  # no checks: the weights at the end are the ones kept
        loop = run_loop(batches, step, steps)
        state, kept_check = kept.state_dict(), 0
    else:  # the starting weights score ``baseline`` and are kept unless a check beats them
        initial = copy.deepcopy(model.state_dict())
        loop = run_loop(batches, step, steps, check_every=check_every, check=score, kept=kept, patience=patience,
                        after_check=report, state=LoopState(best=baseline, best_state=initial))
        assert loop.best_state is not None
        state, kept_check = loop.best_state, loop.best_check
        if keep_last:
            settled = last[1] is not None and last[0] >= baseline
            state, kept_check = (last[1], loop.checks) if settled else (initial, 0)
    return CTCRun(state, loop.best_check, kept_check, loop.checks, losses, time.perf_counter() - start)


def _start_model(config: LineTrainConfig) -> torch.nn.Module:
    """The model training starts from: ``config.init``'s weights (a line reader of ``config.arch``), else random."""
    if not config.init:
        return create_model(config.arch, config.model_config)
    start = load_model(config.init, "cpu", num_classes=len(LINE_CLASSES), task="lines")
    if start.arch != config.arch:
        raise ConfigError(f"{start.path}: a {start.arch} reader, not {config.arch}; pass --arch {start.arch}")
    if start.metadata.get("input", "ink") != config.lines:
        raise ConfigError(f"{start.path}: it reads {start.metadata.get('input', 'ink')} lines, not {config.lines}")
    assert start.model is not None
    return start.model


def train_line_reader(
    config: LineTrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    device: torch.device,
    progress: Progress | None = None,
    snapshot: Snapshot | None = None,
    snapshot_every: int = 0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a line reader (``config.arch``) on lines made from ``images`` (MNIST training digits).

    ``config.val_size`` digits (seeded) are held out; ``config.val_lines`` lines of them
    measure the exact-reading rate at the end. ``snapshot`` (if given) is called with the
    weights being kept (the moving average when ``config.ema`` is set), in eval mode, every
    ``snapshot_every`` steps, to measure them elsewhere (a learning curve); it must not change
    them. Returns the model (eval mode) and metrics.
    """

    config.validate()
    tx, ty, vx, vy = split_train_val(images, labels, config.val_size, config.seed)
    torch.manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    model = _start_model(config).to(device)
    # Workers are spawned, not forked: a fork copies whatever locks the parent's threads hold (ONNX
    # Runtime's and PyTorch's pools in a long-lived process), and the child can hang on one.
    stream = torch.utils.data.DataLoader(_Lines(tx, ty, config), batch_size=None, num_workers=config.workers,
                                         prefetch_factor=4 if config.workers else None,
                                         multiprocessing_context="spawn" if config.workers else None)
    start = time.perf_counter()

    def after_step(step: int, loss: float) -> None:
        if progress is not None:
            progress(step, config.steps, loss)

    def weights(step: int, kept: torch.nn.Module) -> None:
        assert snapshot is not None
        snapshot(step, time.perf_counter() - start, kept)

    run = fit_ctc(model, stream, config.steps, lr=config.lr, weight_decay=config.weight_decay, warmup=config.warmup,
                  clip=config.clip, device=device, precision=precision, ema_decay=config.ema, on_step=after_step,
                  on_weights=weights if snapshot is not None else None, weights_every=snapshot_every)
    model.load_state_dict(run.state)  # the moving average when there is one, else the last weights
    train_seconds = run.seconds
    val = validation_lines(config, vx, vy)
    metrics = {"val_lines": len(val),
               "final_loss": float(np.mean(run.losses[-100:])), "train_seconds": train_seconds,
               "precision": precision}
    metrics.update(calibration(model, val, device))
    model.eval()
    if snapshot is not None:
        snapshot(config.steps, train_seconds, model)
    return model, metrics


def calibration(model: torch.nn.Module, val: Sequence[tuple[np.ndarray, str]],
                device: torch.device) -> dict[str, float]:
    """How the reader decodes, fitted on the validation lines (metrics).

    First the temperature (by CTC NLL; it changes probabilities, not readings), then at that
    temperature the blank penalty reading most lines exactly (it changes readings, not
    probabilities): ``val_exact`` is read with both, ``val_exact_plain`` by the plain best path.
    """
    logits = _line_logits(model, val, device)
    truths = [truth for _, truth in val]
    t, before, after = _fit_temperature(logits, truths)
    penalty, plain, exact = fit_blank_penalty([(z / t).log_softmax(dim=1).numpy() for z in logits], truths)
    return {"temperature": t, "val_nll": before, "val_nll_calibrated": after, "blank_penalty": penalty,
            "val_exact_plain": plain, "val_exact": exact}


def calibrate_line_reader_file(
    name_or_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device | str = "cpu",
) -> tuple[Path, dict[str, float]]:
    """Refit a line reader's temperature and blank penalty on its validation lines and store them.

    The validation lines are rebuilt from the recipe in the file (``line_train_config``) and
    ``images``/``labels``, the MNIST training digits it was trained on. Only the metadata
    changes; the weights are copied byte for byte. Writes ``out`` (default: the file itself,
    atomically). Returns the path and the fitted figures.
    """
    dev = torch.device(device)
    mf = load_model(name_or_path, dev, num_classes=len(LINE_CLASSES), task="lines")
    recipe = mf.metadata.get("line_train_config")
    if not isinstance(recipe, dict):
        raise ConfigError(f"{mf.path}: no line_train_config stored, so its validation lines cannot be rebuilt")
    try:
        config = LineTrainConfig(**{**recipe, "touching": tuple(recipe.get("touching", (0.0,)))})
        config.validate()
    except (TypeError, ValueError, DigitrecError) as exc:
        raise ConfigError(f"{mf.path}: bad line_train_config ({first_line(exc)})") from exc
    _, _, vx, vy = split_train_val(images, labels, config.val_size, config.seed)
    fitted = calibration(mf.model, validation_lines(config, vx, vy), dev)
    metrics = {**(mf.metadata.get("metrics") or {}), **fitted}
    path = write_metadata(mf.path, {"temperature": fitted["temperature"], "blank_penalty": fitted["blank_penalty"],
                                    "metrics": metrics}, out=out if out is not None else mf.path)
    return path, fitted


def save_line_reader(path: str | Path, model: torch.nn.Module, config: LineTrainConfig,
                     metrics: dict[str, Any]) -> Path:
    """Write the line reader's model file (atomically) with how it was trained; returns the path."""
    extra = {
        "role": "line reader",
        "line_train_config": {**dataclasses.asdict(config), "touching": list(config.touching)},
        "input": config.lines,  # what the reader reads: "paper" (grey pictures) or "ink" (binarised)
        "temperature": float(metrics.get("temperature", 1.0)),  # logits are divided by it (calibration)
        "blank_penalty": float(metrics.get("blank_penalty", 0.0)),  # nats off the blank when decoding
        "metrics": dict(metrics),
    }
    return save_model(path, model, config.arch, model_config_dict(model),
                      class_names=list(LINE_CLASSES), extra=extra)
