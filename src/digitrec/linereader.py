"""Line readers: read a whole line of digits at once, without cutting it (CTC): training, decoding, boxes.

A line reader answers, per column frame of a 32-pixel-high line, a distribution over "no digit
here" (the CTC blank) and the ten digits; the number is the best path with repeats and blanks
removed (Graves et al., 2006). There are two kinds, told apart by the ``input`` their file stores:

- **grey** (``lines="paper"``, ``line-crnn``, the bundled reader and the default of
  :meth:`Recogniser.read`): reads the picture itself, prepared by :mod:`digitrec.lineprep`. It is
  trained on lines made by :mod:`digitrec.paper` from MNIST *training* digits on simulated paper;
  :meth:`LineReader.read_grey` gives the digits, their confidences, boxes and the probability of
  the whole string (calibrated by a temperature fitted on validation lines).
- **ink** (``lines="ink"``, ``line-ctc``): reads the binarised ink the segmenter
  (:mod:`digitrec.numbers`) keeps, as a second opinion on its cuts (:func:`choose_reading`: the
  segmenter's digits win unless the line reader's own reading is ``PREFER_SEGMENTS`` nats more
  likely). It is trained on lines composed by :func:`compose_line`.

Either way the validation digits (``val_size``, seeded) are kept out of training.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from .checkpoint import ModelFile, packaged_file, save_model
from .errors import ConfigError, ModelFileError
from .lineprep import GreyLine, line_input
from .models import LINE_HEIGHT, LINE_STRIDE, create_model, get_model_spec, list_models, model_config_dict
from .numbers import LineInk, input_box
from .paper import NO_DIGITS, render_line
from .preprocess import NORMALIZATION, Normalization, normalize
from .runtime import autocast, resolve_precision

__all__ = [
    "DIGIT_HEIGHT",
    "PREFER_SEGMENTS",
    "LINE_CLASSES",
    "LineImage",
    "LineDigit",
    "LineTrainConfig",
    "line_image",
    "compose_line",
    "decode",
    "string_log_prob",
    "choose_reading",
    "digit_boxes",
    "train_line_reader",
    "save_line_reader",
    "bundled_line_reader",
    "LineReader",
    "GreyDigit",
    "frame_spans",
    "grey_boxes",
    "validation_lines",
    "batch_log_probs",
    "fit_line_temperature",
    "calibration",
    "LINE_KINDS",
    "pack_lines",
    "ctc_step",
    "render_training_line",
]

DIGIT_HEIGHT = 20  # digits' height in the line reader's input, pixels (MNIST fits digits in 20x20)
_PAD = 4  # blank columns on either side of a line, pixels
# The line reader's reading replaces the segmenter's only when it is this many nats more likely
# (both scored by the line reader): the digit classifier is the better judge of single digits.
PREFER_SEGMENTS = 3.0
BLANK = 0  # CTC blank class; digit d is class d + 1
# Boxes: a piece of a stroke under this fraction of the stroke's largest piece is a sliver (left
# out), and a stroke with more than 1 - _STRAY of its ink in one box belongs to that box whole.
_STRAY = 0.25
LINE_CLASSES = ["blank", *(str(d) for d in range(10))]  # a line reader's class names, in logit order


@dataclass(frozen=True)
class LineImage:
    """A line of digits as the line reader sees it, and where it sits in the working picture."""

    image: np.ndarray  # (LINE_HEIGHT, W) float32 [0, 1], white on black, W a multiple of LINE_STRIDE
    x0: float  # working-picture column of the line image's column 0, pixels
    scale: float  # line-image columns per working-picture column


@dataclass(frozen=True)
class LineDigit:
    """One digit of a line reader's reading."""

    digit: int  # 0-9
    confidence: float  # the highest probability of this digit over its frames
    frame: int  # the frame where that probability peaks (column LINE_STRIDE * frame of the line image)


def line_image(line: LineInk) -> LineImage:
    """Scale a line's ink so its digits are ``DIGIT_HEIGHT`` high, centred in ``LINE_HEIGHT`` rows."""
    scale = DIGIT_HEIGHT / max(line.height, 1.0)
    h, w = line.ink.shape
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    x_scale = new_w / w  # what the resize really did across, after rounding the width
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    small = np.clip(np.asarray(Image.fromarray(line.ink, mode="F").resize((new_w, new_h), resample)), 0.0, 1.0)
    width = -(-(new_w + 2 * _PAD) // LINE_STRIDE) * LINE_STRIDE
    out = np.zeros((LINE_HEIGHT, width), np.float32)
    # The line's centre row goes to the middle; ink beyond the band (a tall stray stroke) is clipped.
    top = int(round(LINE_HEIGHT / 2 - (line.centre - line.box[1]) * scale))
    r0, r1 = max(0, top), min(LINE_HEIGHT, top + new_h)
    if r1 > r0:
        out[r0:r1, _PAD : _PAD + new_w] = small[r0 - top : r1 - top]
    return LineImage(image=out, x0=line.box[0] - _PAD / x_scale, scale=x_scale)


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
    canvas = np.zeros((LINE_HEIGHT, sum(p.shape[1] for p in pieces) + 16 * len(pieces) + 2 * _PAD), np.float32)
    right = np.full(LINE_HEIGHT, -(10**6))  # rightmost ink column so far, per row
    x = _PAD
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
    canvas = canvas[:, : int(right.max()) + 1 + _PAD]
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
           touching: Sequence[float],
           lines: str = "ink") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``size`` lines of one random length (little padding): (x, targets, target lengths, frames).

    Grey lines hold no digit with probability ``paper.NO_DIGITS`` (the CTC target is then empty).
    """
    count = int(rng.integers(1, max_digits + 1))
    make = _paper_line if lines == "paper" else _ink_line
    out: list[tuple[np.ndarray, str]] = []
    for _ in range(size):
        n = 0 if lines == "paper" and rng.random() < NO_DIGITS else count
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

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.config.seed, 2, info.id if info is not None else 0])
        c = self.config
        while True:
            yield _batch(self.images, self.labels, rng, c.batch_size, c.max_digits, c.touching, c.lines)


# --- decoding -----------------------------------------------------------------------------------------


def decode(log_probs: np.ndarray) -> list[LineDigit]:
    """Best-path CTC decoding of (T, 11) frame log-probabilities: the digits, left to right."""
    best = log_probs.argmax(axis=1)
    out: list[LineDigit] = []
    prev = BLANK
    for t, c in enumerate(best.tolist()):
        if c != BLANK:
            p = float(np.exp(log_probs[t, c]))
            if c != prev:
                out.append(LineDigit(digit=c - 1, confidence=p, frame=t))
            elif p > out[-1].confidence:
                out[-1] = LineDigit(digit=c - 1, confidence=p, frame=t)
        prev = c
    return out


def string_log_prob(log_probs: np.ndarray, digits: str) -> float:
    """log p(``digits`` | line) under the line reader (CTC forward algorithm); -inf if impossible."""
    if not digits:
        return float(log_probs[:, BLANK].sum())
    lp = torch.from_numpy(np.ascontiguousarray(log_probs, dtype=np.float32))[:, None]  # (T, 1, 11)
    target = torch.tensor([[int(d) + 1 for d in digits]])
    loss = F.ctc_loss(lp, target, torch.tensor([lp.shape[0]]), torch.tensor([len(digits)]), blank=BLANK,
                      reduction="sum", zero_infinity=False)
    return -float(loss)


def choose_reading(log_probs: np.ndarray, segmented: str | None) -> list[LineDigit] | None:
    """The line reader's best reading if it beats the segmenter's by ``PREFER_SEGMENTS`` nats, else None.

    Both readings are scored by the line reader; None means: keep the segmenter's.
    """
    own = decode(log_probs)
    text = _text(own)
    if not own or text == segmented:
        return None
    theirs = string_log_prob(log_probs, segmented) if segmented else -math.inf
    return own if string_log_prob(log_probs, text) > theirs + PREFER_SEGMENTS else None


def digit_boxes(line: LineInk, view: LineImage, frames: Sequence[int],
                scale: float = 1.0) -> list[tuple[int, int, int, int]]:
    """A box (x, y, width, height; input pixels) per digit of a line reader's reading.

    The line's columns are divided midway between the frames (ascending) where neighbouring
    digits peak. A part ignores slivers, pieces of a stroke under ``_STRAY`` of the stroke's
    largest piece (a cut grazing a neighbour's edge); a stroke with more than ``1 - _STRAY`` of
    its ink in one part goes to it whole, and one shared more evenly (touching digits) is split
    at the cuts. Each box bounds its part's ink (``scale``: input pixels per working pixel).
    """
    if not frames:
        return []
    if any(b < a for a, b in zip(frames, frames[1:])):
        raise ValueError(f"frames must be in ascending order, got {list(frames)}")
    h, w = line.ink.shape
    # Frame t covers line-image columns [LINE_STRIDE * t, LINE_STRIDE * (t + 1)).
    centres = [view.x0 + (f + 0.5) * LINE_STRIDE / view.scale - line.box[0] for f in frames]
    cuts = np.clip([0, *(int(round((a + b) / 2)) for a, b in zip(centres, centres[1:])), w], 0, w)
    labels, count = ndimage.label(line.ink > 0, structure=np.ones((3, 3)))
    part_of_column = np.searchsorted(cuts[1:-1], np.arange(w), side="right")  # (w,) part index
    # share[c, k]: the fraction of stroke c's ink in part k.
    share = np.zeros((count + 1, len(frames)))
    np.add.at(share, (labels.ravel(), np.broadcast_to(part_of_column, (h, w)).ravel()), line.ink.ravel())
    share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-9)
    owner, largest = share.argmax(axis=1), share.max(axis=1)
    whole = largest > 1 - _STRAY
    boxes = []
    for k, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
        in_columns = (part_of_column == k)[None, :] & (labels > 0)
        owned = (whole & (owner == k))[labels] & (labels > 0)  # strokes this part holds whole
        mask = (in_columns & (share[:, k] >= _STRAY * largest)[labels]) | owned
        if not mask.any():  # only slivers of other digits' strokes here: keep them rather than nothing
            mask = in_columns
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, h)
        x0, x1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (int(lo), max(int(hi), int(lo) + 1))
        bx, by = line.box[0], line.box[1]
        boxes.append(input_box(bx + x0, by + y0, bx + x1, by + y1, scale))
    return boxes


# --- training ---------------------------------------------------------------------------------------------


LINE_KINDS = ("paper", "ink")  # what a line reader is trained on: grey lines on paper, or binarised ink


@dataclass(frozen=True)
class LineTrainConfig:
    """How a line reader is trained (on lines made from MNIST training digits)."""

    steps: int = 8000  # optimiser steps (one batch of freshly made lines each)
    batch_size: int = 64  # lines per step
    max_digits: int = 7  # lines hold 1 to this many digits
    touching: tuple[float, ...] = (0.0, 0.2, 0.4, 0.7)  # share of touching gaps (ink lines only); one drawn per line
    lr: float = 3e-3  # peak learning rate of one-cycle AdamW
    weight_decay: float = 1e-2  # decoupled weight decay
    warmup: float = 0.15  # fraction of the steps spent warming up
    clip: float = 5.0  # largest gradient norm applied (larger ones are scaled down to it)
    val_size: int = 5000  # training digits held out (seeded) and used only for the validation lines
    val_lines: int = 1000  # validation lines made from the held-out digits
    seed: int = 0  # seeds the held-out split, the lines and the weights
    arch: str = "line-crnn"  # registered line architecture (task "lines")
    lines: str = "paper"  # "paper": grey lines (digitrec.paper), the default reader; "ink": binarised ink
    workers: int = 1  # processes making lines while the model trains (0: in the training process)
    precision: str = "auto"  # "auto" (bf16 autocast where the hardware has it), "bf16" or "fp32"
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the arch's config

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
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
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"invalid precision {self.precision!r} (use auto, fp32 or bf16)")


Progress = Callable[[int, int, float], None]  # (steps done, steps in all, last loss)


def _log_probs(model: torch.nn.Module, x: torch.Tensor, norm: Normalization, temperature: float = 1.0) -> torch.Tensor:
    return (model(normalize(x, norm)).float() / temperature).log_softmax(dim=1)  # (B, 11, T)


def _line_log_probs(model: torch.nn.Module, image: np.ndarray, device: torch.device,
                    norm: Normalization = NORMALIZATION, temperature: float = 1.0) -> np.ndarray:
    """(T, 11) frame log-probabilities of one (LINE_HEIGHT, W) line image (model in eval mode)."""
    x = torch.from_numpy(image)[None, None].to(device)  # (1, 1, 32, W)
    with torch.inference_mode():
        return _log_probs(model, x, norm, temperature)[0].T.cpu().numpy()


def batch_log_probs(model: torch.nn.Module, images: Sequence[np.ndarray], device: torch.device,
                    norm: Normalization = NORMALIZATION, temperature: float = 1.0) -> list[np.ndarray]:
    """(T_i, 11) frame log-probabilities of each (LINE_HEIGHT, W_i) line image, in one forward pass.

    Lines are padded on the right with black to the widest, as training batches are; each
    line's frames stop at its own width. ``temperature`` divides the logits (calibration).
    """
    if not images:
        return []
    width = max(image.shape[1] for image in images)
    x = np.zeros((len(images), 1, LINE_HEIGHT, width), np.float32)
    for i, image in enumerate(images):
        x[i, 0, :, : image.shape[1]] = image
    with torch.inference_mode():
        out = _log_probs(model, torch.from_numpy(x).to(device), norm, temperature)  # (B, 11, T)
    frames = out.transpose(1, 2).cpu().numpy()  # (B, T, 11)
    return [frames[i, : image.shape[1] // LINE_STRIDE] for i, image in enumerate(images)]


def fit_line_temperature(model: torch.nn.Module, lines: Sequence[tuple[np.ndarray, str]],
                         device: torch.device) -> tuple[float, float, float]:
    """The logit temperature minimising the CTC NLL of the true strings of ``lines``: (T, NLL at 1, NLL at T).

    The reading (the best path) does not change with it; the string and digit probabilities do.
    """
    model.eval()
    logits = []
    for image, _ in lines:
        x = torch.from_numpy(image)[None, None].to(device)
        with torch.inference_mode():
            logits.append(model(normalize(x, NORMALIZATION)).float()[0].T.cpu())  # (T, 11)

    def nll(t: float) -> float:
        total = 0.0
        for z, (_, truth) in zip(logits, lines):
            lp = (z / t).log_softmax(dim=1).numpy()
            total -= max(string_log_prob(lp, truth), -50.0)  # an impossible line counts as a sure miss
        return total / max(len(lines), 1)

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


def _text(digits: Sequence[LineDigit]) -> str:
    return "".join(str(d.digit) for d in digits)


def _exact_rate(model: torch.nn.Module, lines: list[tuple[np.ndarray, str]], device: torch.device) -> float:
    model.eval()
    right = sum(_text(decode(_line_log_probs(model, image, device))) == truth for image, truth in lines)
    return right / max(len(lines), 1)


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
    model in eval mode every ``snapshot_every`` steps, to measure it elsewhere (a learning
    curve); it must not change the model. Returns the model (eval mode) and metrics.
    """
    from .train import split_train_val

    config.validate()
    tx, ty, vx, vy = split_train_val(images, labels, config.val_size, config.seed)
    torch.manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    model = create_model(config.arch, config.model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps,
                                                   pct_start=max(config.warmup, 1e-3))
    stream = torch.utils.data.DataLoader(_Lines(tx, ty, config), batch_size=None, num_workers=config.workers,
                                         prefetch_factor=4 if config.workers else None)
    start = time.perf_counter()
    losses: list[float] = []
    model.train()
    for step, batch in enumerate(stream):
        if step == config.steps:
            break
        losses.append(ctc_step(model, optimizer, batch, device, precision, NORMALIZATION, config.clip))
        schedule.step()
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
        if snapshot is not None and snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < config.steps:
            snapshot(step + 1, time.perf_counter() - start, model.eval())
            model.train()
    train_seconds = time.perf_counter() - start
    val = validation_lines(config, vx, vy)
    metrics = {"val_exact": _exact_rate(model, val, device), "val_lines": len(val),
               "final_loss": float(np.mean(losses[-100:])), "train_seconds": train_seconds,
               "precision": precision}
    metrics.update(calibration(model, val, device))
    model.eval()
    if snapshot is not None:
        snapshot(config.steps, train_seconds, model)
    return model, metrics


def calibration(model: torch.nn.Module, val: Sequence[tuple[np.ndarray, str]],
                device: torch.device) -> dict[str, float]:
    """The temperature fitted on the validation lines, and their NLL before and after (metrics)."""
    t, before, after = fit_line_temperature(model, val, device)
    return {"temperature": t, "val_nll": before, "val_nll_calibrated": after}


def save_line_reader(path: str | Path, model: torch.nn.Module, config: LineTrainConfig,
                     metrics: dict[str, Any]) -> Path:
    """Write the line reader's model file (atomically) with how it was trained; returns the path."""
    extra = {
        "role": "line reader",
        "line_train_config": {**dataclasses.asdict(config), "touching": list(config.touching)},
        "input": config.lines,  # what the reader reads: "paper" (grey pictures) or "ink" (binarised)
        "temperature": float(metrics.get("temperature", 1.0)),  # logits are divided by it (calibration)
        "metrics": dict(metrics),
    }
    return save_model(path, model, config.arch, model_config_dict(model),
                      class_names=list(LINE_CLASSES), extra=extra)


def bundled_line_reader() -> Path | None:
    """The grey line reader shipped inside the package, or None if this installation has none."""
    return packaged_file("linereader", "grey.safetensors")


@dataclass(frozen=True)
class GreyDigit:
    """One digit of the grey reader's reading, placed in the input picture."""

    digit: int  # 0-9
    confidence: float  # the highest probability of this digit over its frames
    box: tuple[int, int, int, int]  # (x, y, width, height) in input pixels


def frame_spans(log_probs: np.ndarray) -> list[tuple[int, int]]:
    """The [first, last] frames of each digit on the best CTC path, left to right (as :func:`decode` reads it)."""
    best = log_probs.argmax(axis=1)
    spans: list[tuple[int, int]] = []
    prev = BLANK
    for t, c in enumerate(best.tolist()):
        if c != BLANK:
            if c != prev:
                spans.append((t, t))
            else:
                spans[-1] = (spans[-1][0], t)
        prev = c
    return spans


def grey_boxes(view: GreyLine, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """A box (x, y, width, height; input pixels) per digit from its CTC frames.

    Frames mark where a digit is recognised, usually its middle, not its edges: each digit
    gets the columns from midway to its left neighbour's frames to midway to its right one's
    (the line's first and last ink at the ends), and its box bounds the ink in those columns.
    """
    if not spans:
        return []
    image = view.image
    inked_cols = np.flatnonzero(image.max(axis=0) > 0.35)
    first = int(inked_cols[0]) if inked_cols.size else 0
    last = int(inked_cols[-1]) + 1 if inked_cols.size else image.shape[1]
    centres = [LINE_STRIDE * (a + b + 1) / 2 for a, b in spans]
    edges = [min(first, int(centres[0]) - 1), *(int(round((c + d) / 2)) for c, d in zip(centres, centres[1:])),
             max(last, int(centres[-1]) + 1)]
    x, y, w, h = view.box
    y_scale = LINE_HEIGHT / h
    boxes = []
    for lo, hi in zip(edges, edges[1:]):
        lo, hi = max(lo, 0), min(max(hi, lo + 1), image.shape[1])
        rows = np.flatnonzero(image[:, lo:hi].max(axis=1) > 0.35)
        r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, LINE_HEIGHT)
        cols = np.flatnonzero(image[:, lo:hi].max(axis=0) > 0.35)
        if cols.size:  # the ink in the band, not the band
            lo, hi = lo + int(cols[0]), lo + int(cols[-1]) + 1
        x0, x1 = x + lo / view.scale, x + hi / view.scale
        y0, y1 = y + r0 / y_scale, y + r1 / y_scale
        boxes.append(input_box(x0, y0, x1, y1, 1.0))
    return boxes


class LineReader:
    """A loaded line reader: frame log-probabilities for a line, and readings of grey pictures."""

    def __init__(self, model_file: ModelFile, device: torch.device) -> None:
        if get_model_spec(model_file.arch).task != "lines" or model_file.class_names != LINE_CLASSES:
            raise ModelFileError(f"{model_file.path}: not a line reader ({model_file.arch}, classes "
                                 f"{model_file.class_names})")
        self.file = model_file  # loaded in eval mode, and never switched: requests may share it
        self.device = device
        # Files from before the grey reader have no "input": they read binarised ink.
        self.input: str = str(model_file.metadata.get("input", "ink"))

    @property
    def reads_grey(self) -> bool:
        """True for a reader of grey pictures (trained on paper lines), False for one of binarised ink."""
        return self.input == "paper"

    def log_probs(self, line: LineImage | GreyLine) -> np.ndarray:
        """(T, 11) frame log-probabilities of a line image (T = its width / LINE_STRIDE)."""
        return _line_log_probs(self.file.model, line.image, self.device, self.file.normalization,
                               self.file.temperature)

    def read_grey(self, views: Sequence[GreyLine], batch_size: int = 64) -> list[tuple[list[GreyDigit], float]]:
        """The digits of each prepared grey line and the reader's probability of that whole string.

        Lines of the same width are read together, ``batch_size`` at a time: unpadded, so a
        line reads the same alone or in a batch (padding would reach every frame through the
        LSTM's backward pass).
        """
        widths: dict[int, list[int]] = {}
        for i, view in enumerate(views):
            widths.setdefault(view.image.shape[1], []).append(i)
        chunks = [same[k : k + batch_size] for same in widths.values() for k in range(0, len(same), batch_size)]
        out: list[tuple[list[GreyDigit], float]] = [([], 0.0)] * len(views)
        for chunk in chunks:
            if len(chunk) == 1:  # one line (and the path the tests stub)
                found = [self.log_probs(views[chunk[0]])]
            else:
                found = batch_log_probs(self.file.model, [views[i].image for i in chunk], self.device,
                                        self.file.normalization, self.file.temperature)
            for i, log_probs in zip(chunk, found):
                digits = decode(log_probs)
                boxes = grey_boxes(views[i], frame_spans(log_probs))
                probability = math.exp(string_log_prob(log_probs, _text(digits))) if digits else 0.0
                out[i] = ([GreyDigit(d.digit, d.confidence, box) for d, box in zip(digits, boxes)], probability)
        return out
