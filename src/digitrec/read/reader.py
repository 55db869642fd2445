"""Reading whole numbers: the grey line reader on the picture, or the digits cut apart and classified one by one.

:meth:`digitrec.infer.recogniser.Recogniser.read` answers through a :class:`NumberReader`,
which holds the helper models (the line reader, the piece verifier) and borrows the
recogniser's digit classifier for the segmenter's pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from digitrec.data.ink import LINE_HEIGHT
from digitrec.data.preprocess import ImageSource, InkMap, decode_gray, ink_map
from digitrec.infer.onnx import OnnxRunner, required_graph
from digitrec.models.header import ModelFile
from digitrec.read.lineprep import READ_WHOLE, GreyLine, line_input, locate, tighten_box
from digitrec.read.linereader import LineReader, choose_reading, digit_boxes, line_image
from digitrec.read.readings import DigitReading, NumberReading
from digitrec.read.segment import line_ink, segment

if TYPE_CHECKING:  # reading with the grey reader through ONNX Runtime needs no PyTorch
    import torch

__all__ = ["NO_NUMBER_BELOW", "NumberReader", "grey_view"]

# A grey reading is a guess ("no number found") when neither it nor the plain best path's reading
# (without the blank penalty) is this likely as a whole string.
# Chosen on the development cheques: it drops 0.2% of right readings and turns 7% of wrong ones
# (and marks on empty paper) into "no number".
NO_NUMBER_BELOW = 0.1
# A small picture whose clear ink, read whole, spans at least this share of the line's height is
# read whole without looking for its band: a cheap first look before lineprep.READ_BAND_BELOW's
# test (the development cheques span 0.47-1, 90% over 0.59; small generated cards 0.36-0.47).
_BAND_LOOK_BELOW = 0.55


def _line_runner(line_reader: ModelFile) -> OnnxRunner:
    """ONNX Runtime over the line reader's graph: the cached one, else exported now (and cached)."""
    if line_reader.model is None:
        return OnnxRunner(required_graph(line_reader))
    from digitrec.infer.backends import onnx_graph  # PyTorch, to export

    return OnnxRunner(onnx_graph(line_reader))


class _Answer(Protocol):  # what the digit classifier gives per piece (a Prediction)
    digit: int | None
    confidence: float
    unsure: bool


Classify = Callable[[np.ndarray], Sequence[_Answer]]  # prepared (N, 28, 28) pieces -> one answer each


class NumberReader:
    """Reads whole numbers with a line reader and/or the segmenter, classifying pieces with ``classify``."""

    def __init__(self, classify: Classify, min_confidence: float, device: torch.device | str,
                 verifier: ModelFile | None = None, line_reader: ModelFile | None = None,
                 backend: str = "torch") -> None:
        self.predict_arrays = classify
        self.min_confidence = min_confidence
        # The piece verifier that helps cut numbers (None: candidates scored by the classifier alone).
        self._whole = None
        if verifier is not None:
            from digitrec.read.verifier import whole_digit_scorer  # PyTorch

            self._whole = whole_digit_scorer(verifier, device)
        # The line reader: the reader of grey pictures, or a second opinion on the segmenter's cuts;
        # with the onnx backend its graph runs in ONNX Runtime (the cached one if only the header was read).
        self._lines = None
        if line_reader is not None:
            self._lines = LineReader(line_reader, device, _line_runner(line_reader) if backend == "onnx" else None)

    def read(self, images: Sequence[ImageSource]) -> list[NumberReading]:
        """Read a line of handwritten digits (a whole number) in one picture, or in each of a list.

        With the bundled grey line reader (the default) the picture itself is read, without
        binarising or cutting it (:mod:`digitrec.read.lineprep`, :mod:`digitrec.read.linereader`): a
        small picture whole, a larger one in the band of ink found in it. ``confidence`` is
        then the reader's probability of the whole string. A list is read in batches of lines
        of the same width, faster per picture and with the same answers. With a reader of binarised ink, or none, the
        digits are cut apart and classified one by one (:mod:`digitrec.read.segment`). A picture
        without a number gives ``number`` None.
        """
        if self._lines is not None and self._lines.reads_grey:
            return self._read_grey(list(images))
        return [self._read_segments(i) for i in images]

    def _read_segments(self, image: ImageSource) -> NumberReading:
        """:meth:`read` by cutting the digits apart (and the ink line reader's second opinion)."""
        cleaned = ink_map(image)
        pieces = segment(cleaned, lambda x: np.array([p.confidence for p in self.predict_arrays(x)]),
                         whole=self._whole)
        if not pieces:
            return NumberReading(number=None, confidence=0.0, digits=(), unsure=True)
        preds = self.predict_arrays(np.stack([p.input for p in pieces]))
        digits = tuple(
            DigitReading(digit=int(p.digit), confidence=p.confidence, box=piece.box, unsure=p.unsure)
            for p, piece in zip(preds, pieces)
            if p.digit is not None
        )
        if self._lines is not None:
            digits = self._second_opinion(cleaned, digits)
        return NumberReading(
            number="".join(str(d.digit) for d in digits),
            confidence=float(np.prod([d.confidence for d in digits])),
            digits=digits,
            unsure=any(d.unsure for d in digits),
        )

    def _read_grey(self, images: list[ImageSource]) -> list[NumberReading]:
        """:meth:`read` with the grey line reader: each picture's line, then all lines in batches."""
        assert self._lines is not None
        lines: list[tuple[np.ndarray, float, GreyLine] | None] = []  # grey pixels, decoding scale, the line
        for image in images:
            gray, scale, _ = decode_gray(image)
            view = grey_view(gray)
            lines.append(None if view is None else (gray, scale, view))
        found = iter(self._lines.read_grey([line[2] for line in lines if line is not None]))
        nothing = NumberReading(number=None, confidence=0.0, digits=(), unsure=True)
        readings = []
        for line in lines:
            reading = next(found) if line is not None else None
            if line is None or reading is None or not reading.digits or reading.support < NO_NUMBER_BELOW:
                readings.append(nothing)
                continue
            digits_found, probability = reading.digits, reading.probability
            gray, scale, view = line
            margin = int(np.ceil(view.box[3] / LINE_HEIGHT))  # one line-image pixel, in input pixels
            digits = tuple(DigitReading(digit=d.digit, confidence=d.confidence,
                                        box=_scaled(tighten_box(gray, d.box, view.inverted, margin), scale),
                                        unsure=d.confidence < self.min_confidence) for d in digits_found)
            readings.append(NumberReading(number="".join(str(d.digit) for d in digits), confidence=probability,
                                          digits=digits,
                                          unsure=probability < self.min_confidence or any(d.unsure for d in digits)))
        return readings

    def _second_opinion(self, cleaned: InkMap, digits: tuple[DigitReading, ...]) -> tuple[DigitReading, ...]:
        """The line reader's digits if it reads the line clearly better than ``digits``, else ``digits``."""
        assert self._lines is not None
        line = line_ink(cleaned)
        if line is None:
            return digits
        view = line_image(line)
        log_probs = self._lines.log_probs(view)
        own = choose_reading(log_probs, "".join(str(d.digit) for d in digits))
        if own is None:
            return digits
        boxes = digit_boxes(line, view, [d.frame for d in own], cleaned.scale)
        return tuple(DigitReading(digit=d.digit, confidence=d.confidence, box=box,
                                  unsure=d.confidence < self.min_confidence) for d, box in zip(own, boxes))


def _scaled(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    """A box in decoded pixels -> input pixels (a large JPEG is decoded at reduced size)."""
    return box if scale == 1.0 else tuple(int(round(v * scale)) for v in box)  # type: ignore[return-value]


def grey_view(gray: np.ndarray) -> GreyLine | None:
    """The line the grey reader reads in a grey picture, prepared (:func:`lineprep.line_input`); None: none found.

    A small picture whose ink fills most of its height (a cut-out amount, a form field) is read
    whole. Otherwise the band of ink the cleaning pipeline finds is read, with a margin
    (:func:`lineprep.locate`): in a large picture always, in a small one when that band is under
    ``READ_BAND_BELOW`` of its height. The cleaning pipeline costs more than the reading, so a
    small picture is first looked at whole: where its clear ink already spans more than half the
    height (or there is none), the band is not looked for.
    """
    h, w = gray.shape
    whole = None
    if h <= READ_WHOLE:
        whole = line_input(gray)
        rows = np.flatnonzero((whole.image > 0.6).sum(axis=1) >= 2)  # rows with clear ink
        if rows.size == 0 or rows[-1] - rows[0] + 1 >= _BAND_LOOK_BELOW * LINE_HEIGHT:
            return whole
    crop = locate(gray, _ink_box(gray))
    if crop is None:
        return None
    return whole if whole is not None and crop == (0, 0, w, h) else line_input(gray, crop)


def _ink_box(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The band of a line's ink in a large picture, input pixels (x, y, width, height), as cleaning finds it."""
    cleaned = ink_map(gray)
    line = line_ink(cleaned)
    if line is None:
        return None
    x0, y0, x1, y1 = (round(v * cleaned.scale) for v in line.box)
    return (x0, y0, x1 - x0, y1 - y0)


