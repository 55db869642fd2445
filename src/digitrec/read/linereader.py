"""Line readers: read a whole line of digits at once, without cutting it (CTC): decoding and boxes.

A line reader answers, per column frame of a 32-pixel-high line, a distribution over "no digit
here" (the CTC blank) and the ten digits; the number is the best path with repeats and blanks
removed (Graves et al., 2006). There are two kinds, told apart by the ``input`` their file stores:

- **grey** (``lines="paper"``, ``line-crnn``, the bundled reader and the default of
  :meth:`Recogniser.read`): reads the picture itself, prepared by :mod:`digitrec.read.lineprep`. It is
  trained on lines made by :mod:`digitrec.data.paper` from MNIST *training* digits on simulated paper;
  :meth:`LineReader.read_grey` gives the digits, their confidences, boxes and the probability of
  the whole string (calibrated by a temperature fitted on validation lines).
- **ink** (``lines="ink"``, ``line-ctc``): reads the binarised ink the segmenter
  (:mod:`digitrec.read.segment`) keeps, as a second opinion on its cuts (:func:`choose_reading`: the
  segmenter's digits win unless the line reader's own reading is ``PREFER_SEGMENTS`` nats more
  likely). It is trained on lines composed by :func:`digitrec.train.lines.compose_line`.

Training (either kind, the validation digits kept out): :mod:`digitrec.train.lines`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from digitrec.data.ink import LINE_HEIGHT, LINE_STRIDE
from digitrec.data.preprocess import NORMALIZATION, Normalization
from digitrec.errors import ModelFileError
from digitrec.models.header import ModelFile, bundled
from digitrec.read.lineprep import GreyLine
from digitrec.read.segment import LineInk, input_box

if TYPE_CHECKING:  # reading through ONNX Runtime needs no PyTorch
    import torch

    from digitrec.infer.onnx import OnnxRunner

__all__ = [
    "DIGIT_HEIGHT",
    "PREFER_SEGMENTS",
    "LINE_CLASSES",
    "LineImage",
    "LineDigit",
    "line_image",
    "decode",
    "best_path",
    "BLANK_PENALTIES",
    "PENALTY_FLOOR",
    "fit_blank_penalty",
    "read_frames",
    "digits_text",
    "line_log_probs",
    "LINE_PAD",
    "BLANK",
    "string_log_prob",
    "choose_reading",
    "digit_boxes",
    "bundled_line_reader",
    "LineReader",
    "GreyReading",
    "GreyDigit",
    "frame_spans",
    "grey_boxes",
    "batch_log_probs",
]

DIGIT_HEIGHT = 20  # digits' height in the line reader's input, pixels (MNIST fits digits in 20x20)
LINE_PAD = 4  # blank columns on either side of a line, pixels
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
    width = -(-(new_w + 2 * LINE_PAD) // LINE_STRIDE) * LINE_STRIDE
    out = np.zeros((LINE_HEIGHT, width), np.float32)
    # The line's centre row goes to the middle; ink beyond the band (a tall stray stroke) is clipped.
    top = int(round(LINE_HEIGHT / 2 - (line.centre - line.box[1]) * scale))
    r0, r1 = max(0, top), min(LINE_HEIGHT, top + new_h)
    if r1 > r0:
        out[r0:r1, LINE_PAD : LINE_PAD + new_w] = small[r0 - top : r1 - top]
    return LineImage(image=out, x0=line.box[0] - LINE_PAD / x_scale, scale=x_scale)


def digits_text(digits: Sequence[LineDigit]) -> str:
    """The digits of a reading as a string ("" for none)."""
    return "".join(str(d.digit) for d in digits)


def best_path(log_probs: np.ndarray, blank_penalty: float = 0.0) -> np.ndarray:
    """The most likely class of each of the (T, 11) frames, the blank made ``blank_penalty`` nats less likely.

    A reader trained on generated lines is too sure that frames of real writing are blank
    (digits it sees at 0.1-0.5 are dropped): the penalty, fitted on validation lines and stored
    in its model file, lets such digits through. It changes the reading, not the probabilities.
    It only applies where a digit is at least ``PENALTY_FLOOR`` likely: it is for doubtful
    digits, not for the noise at a stroke's end.
    """
    if not blank_penalty:
        return log_probs.argmax(axis=1)
    penalised = np.array(log_probs, copy=True)
    doubtful = log_probs[:, BLANK + 1 :].max(axis=1) >= math.log(PENALTY_FLOOR)
    penalised[doubtful, BLANK] -= blank_penalty
    return penalised.argmax(axis=1)


def decode(log_probs: np.ndarray, blank_penalty: float = 0.0) -> list[LineDigit]:
    """Best-path CTC decoding of (T, 11) frame log-probabilities: the digits, left to right."""
    out: list[LineDigit] = []
    prev = BLANK
    for t, c in enumerate(best_path(log_probs, blank_penalty).tolist()):
        if c != BLANK:
            p = float(np.exp(log_probs[t, c]))
            if c != prev:
                out.append(LineDigit(digit=c - 1, confidence=p, frame=t))
            elif p > out[-1].confidence:
                out[-1] = LineDigit(digit=c - 1, confidence=p, frame=t)
        prev = c
    return out


def read_frames(log_probs: np.ndarray, blank_penalty: float = 0.0) -> tuple[list[LineDigit], float, float]:
    """A line's reading from its (T, 11) frames: (digits, probability of that string, support).

    ``support`` is the probability of the more likely of this reading and the plain best
    path's: a reader's answer is a guess ("no number") when it is low.
    """
    digits = decode(log_probs, blank_penalty)
    text = digits_text(digits)
    probability = math.exp(string_log_prob(log_probs, text)) if digits else 0.0
    plain = digits_text(decode(log_probs)) if blank_penalty else text
    support = max(probability, math.exp(string_log_prob(log_probs, plain)) if plain else 0.0)
    return digits, probability, support


# A digit less likely than this is never let through by the blank penalty: it is the noise where
# a drawn stroke ends. Stage 1 of the bundled reader held a "1" at 3% after a drawn "77"; the first
# stage 2 (generator v3) held a "3" at 6% after a lone "1" drawn on the number pad (read "13" under
# a 5% floor). At 10%, that reader's validation lines read 52.3% exactly (52.6% at 5%) and the
# development cheques 58.8% (59.2%): a few doubtful digits lost for no invented ones.
PENALTY_FLOOR = 0.1
# The blank penalties (nats) a reader's is chosen from: past 5, readings of clean validation lines
# start to gain digits.
BLANK_PENALTIES = tuple(k / 2 for k in range(11))


def fit_blank_penalty(log_probs: Sequence[np.ndarray], truths: Sequence[str],
                      penalties: Sequence[float] = BLANK_PENALTIES) -> tuple[float, float, float]:
    """The penalty reading most of ``truths`` exactly from their frames: (penalty, exact at 0, exact at it).

    Ties go to the smallest penalty (the plain best path when nothing helps).
    """
    if not log_probs or len(log_probs) != len(truths):
        raise ValueError("fit_blank_penalty needs one truth per line, and at least one line")
    def exact(penalty: float) -> float:
        return sum(digits_text(decode(lp, penalty)) == truth for lp, truth in zip(log_probs, truths)) / len(truths)

    rates = {float(penalty): exact(penalty) for penalty in penalties}
    best = max(rates, key=lambda penalty: (rates[penalty], -penalty))
    plain = rates[0.0] if 0.0 in rates else exact(0.0)
    return best, plain, rates[best]


def string_log_prob(log_probs: np.ndarray, digits: str) -> float:
    """log p(``digits`` | line) under the line reader (CTC forward algorithm); -inf if impossible."""
    lp = np.asarray(log_probs, dtype=np.float64)  # (T, 11)
    if not digits:
        return float(lp[:, BLANK].sum())
    # The digits with a blank before, between and after them: the CTC states, S = 2L + 1.
    states = np.full(2 * len(digits) + 1, BLANK)
    states[1::2] = [int(d) + 1 for d in digits]
    # A path may jump over a blank between two different digits (not between repeats).
    jump = np.zeros(len(states), bool)
    jump[2:] = (states[2:] != BLANK) & (states[2:] != states[:-2])
    alpha = np.full(len(states), -np.inf)  # log p(the first t frames end in state s)
    alpha[:2] = lp[0, states[:2]]
    for t in range(1, len(lp)):
        stay, step = alpha, np.concatenate(([-np.inf], alpha[:-1]))
        skip = np.where(jump, np.concatenate(([-np.inf, -np.inf], alpha[:-2])), -np.inf)
        alpha = np.logaddexp(np.logaddexp(stay, step), skip) + lp[t, states]
    return float(np.logaddexp(alpha[-1], alpha[-2]))


def choose_reading(log_probs: np.ndarray, segmented: str | None) -> list[LineDigit] | None:
    """The line reader's best reading if it beats the segmenter's by ``PREFER_SEGMENTS`` nats, else None.

    Both readings are scored by the line reader; None means: keep the segmenter's.
    """
    own = decode(log_probs)
    text = digits_text(own)
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


def _log_probs(model: torch.nn.Module, x: torch.Tensor, norm: Normalization, temperature: float = 1.0) -> torch.Tensor:
    from digitrec.data.preprocess import normalize

    return (model(normalize(x, norm)).float() / temperature).log_softmax(dim=1)  # (B, 11, T)


def line_log_probs(model: torch.nn.Module, image: np.ndarray, device: torch.device,
                    norm: Normalization = NORMALIZATION, temperature: float = 1.0) -> np.ndarray:
    """(T, 11) frame log-probabilities of one (LINE_HEIGHT, W) line image (model in eval mode)."""
    import torch

    x = torch.from_numpy(image)[None, None].to(device)  # (1, 1, 32, W)
    with torch.inference_mode():
        return _log_probs(model, x, norm, temperature)[0].T.cpu().numpy()


def batch_log_probs(model: torch.nn.Module, images: Sequence[np.ndarray], device: torch.device,
                    norm: Normalization = NORMALIZATION, temperature: float = 1.0) -> list[np.ndarray]:
    """(T_i, 11) frame log-probabilities of each (LINE_HEIGHT, W_i) line image, in one forward pass.

    Lines are padded on the right with black to the widest, as training batches are; each
    line's frames stop at its own width. ``temperature`` divides the logits (calibration).
    """
    import torch

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


def bundled_line_reader() -> Path | None:
    """The grey line reader shipped inside the package, or None if this installation has none."""
    return bundled("line reader")


@dataclass(frozen=True)
class GreyDigit:
    """One digit of the grey reader's reading, placed in the input picture."""

    digit: int  # 0-9
    confidence: float  # the highest probability of this digit over its frames
    box: tuple[int, int, int, int]  # (x, y, width, height) in input pixels


@dataclass(frozen=True)
class GreyReading:
    """The grey reader's reading of one line."""

    digits: list[GreyDigit]  # left to right ([] for none)
    probability: float  # the reader's probability of this whole string
    # The probability of the more likely of this reading and the plain best path's (the two differ
    # when the blank penalty lets a digit through): what tells a number from a guess.
    support: float


def frame_spans(log_probs: np.ndarray, blank_penalty: float = 0.0) -> list[tuple[int, int]]:
    """The [first, last] frames of each digit on the best CTC path, left to right (as :func:`decode` reads it)."""
    best = best_path(log_probs, blank_penalty)
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

    def __init__(self, model_file: ModelFile, device: torch.device | str, runner: OnnxRunner | None = None) -> None:
        if model_file.class_names != LINE_CLASSES:
            raise ModelFileError(f"{model_file.path}: not a line reader ({model_file.arch}, classes "
                                 f"{model_file.class_names})")
        if runner is None and model_file.model is None:
            raise ModelFileError(f"{model_file.path}: a line reader needs its weights or its ONNX graph")
        self.file = model_file  # loaded in eval mode, and never switched: requests may share it
        self.device = device
        self._runner = runner  # the exported graph in ONNX Runtime; None: the PyTorch model
        # Files from before the grey reader have no "input": they read binarised ink.
        self.input: str = str(model_file.metadata.get("input", "ink"))

    @property
    def reads_grey(self) -> bool:
        """True for a reader of grey pictures (trained on paper lines), False for one of binarised ink."""
        return self.input == "paper"

    def log_probs(self, line: LineImage | GreyLine) -> np.ndarray:
        """(T, 11) frame log-probabilities of a line image (T = its width / LINE_STRIDE)."""
        if self._runner is not None:
            return self._runner.run(line.image[None])[0]
        return line_log_probs(self.file.model, line.image, self.device, self.file.normalization,
                               self.file.temperature)

    @property
    def blank_penalty(self) -> float:
        """Nats taken off the blank before decoding (from the model file; 0.0: the plain best path)."""
        return self.file.blank_penalty

    def read_grey(self, views: Sequence[GreyLine], batch_size: int = 64) -> list[GreyReading]:
        """The digits of each prepared grey line and the reader's probability of that whole string.

        Lines of the same width are read together, ``batch_size`` at a time: unpadded, so a
        line reads the same alone or in a batch (padding would reach every frame through the
        LSTM's backward pass).
        """
        widths: dict[int, list[int]] = {}
        for i, view in enumerate(views):
            widths.setdefault(view.image.shape[1], []).append(i)
        chunks = [same[k : k + batch_size] for same in widths.values() for k in range(0, len(same), batch_size)]
        out: list[GreyReading] = [GreyReading([], 0.0, 0.0)] * len(views)
        for chunk in chunks:
            if len(chunk) == 1:  # one line (and the path the tests stub)
                found = [self.log_probs(views[chunk[0]])]
            elif self._runner is not None:  # same width: one unpadded batch
                found = list(self._runner.run(np.stack([views[i].image for i in chunk])))
            else:
                found = batch_log_probs(self.file.model, [views[i].image for i in chunk], self.device,
                                        self.file.normalization, self.file.temperature)
            for i, log_probs in zip(chunk, found):
                out[i] = self._reading(views[i], log_probs)
        return out

    def _reading(self, view: GreyLine, log_probs: np.ndarray) -> GreyReading:
        digits, probability, support = read_frames(log_probs, self.blank_penalty)
        boxes = grey_boxes(view, frame_spans(log_probs, self.blank_penalty))
        return GreyReading([GreyDigit(d.digit, d.confidence, box) for d, box in zip(digits, boxes)],
                           probability, support)
