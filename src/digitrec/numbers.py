"""Reading a whole number: find each handwritten digit in a line of digits, left to right.

The algorithm is deliberately simple (connected components of the cleaned ink):

1. drop underlines: blobs far wider than tall and wider than a digit is high;
2. drop specks: blobs with less than ``SPECK_FRACTION`` of the largest blob's area;
3. merge blobs stacked above each other: sharing some columns and at most half the shorter
   one's rows (broken strokes, a "5" whose top bar came loose);
4. split groups that may hold touching digits at minima of the ink's column projection,
   keeping the split (or none) whose pieces the classifier is most confident of;
5. drop groups off the line (mostly outside the band of the median group) or too short to
   be digits (dots, dashes);
6. order left to right; each piece goes through the single-digit steps (crop, fit, centre).

:class:`NumberReading` and :class:`DigitReading` are the answers; the recogniser's ``read``
method classifies the pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .preprocess import InkMap, glyph_to_mnist

__all__ = [
    "SPECK_FRACTION",
    "UNDERLINE_ASPECT",
    "SPLIT_ASPECT",
    "SPLIT_PENALTY",
    "MERGE_OVERLAP",
    "Piece",
    "DigitReading",
    "NumberReading",
    "segment",
]

SPECK_FRACTION = 0.05  # blobs smaller than this fraction of the largest blob's area are dirt
UNDERLINE_ASPECT = 4.0  # a blob this many times wider than tall (and wider than a digit is high) is a line
# A group at least this many times wider than tall may hold touching digits: true of ~97% of
# touching MNIST pairs and ~11% of single MNIST digits (measured on the training images).
SPLIT_ASPECT = 1.0
DIGIT_ASPECT = 0.7  # typical width / height of one handwritten digit, for counting touching digits
SPLIT_PENALTY = 1.0  # an extra digit must raise the product of confidences by more than 1/this
MIN_PIECE_HEIGHT = 0.6  # each piece of a split group must be at least this fraction of its height
LINE_OVERLAP = 0.3  # a digit has at least this fraction of its rows within the line's band
MIN_GROUP_HEIGHT = 0.4  # a digit is at least this fraction of the typical group's height
MERGE_OVERLAP = 0.5  # blobs sharing columns and at most this fraction of the shorter one's rows are stacked


@dataclass(frozen=True)
class Piece:
    """One digit found in the picture, before classification."""

    box: tuple[int, int, int, int]  # (x, y, width, height) in input-image pixels
    input: np.ndarray  # (28, 28) float32 [0, 1]: what the model will see


@dataclass(frozen=True)
class DigitReading:
    """One digit of a number."""

    digit: int  # most probable class
    confidence: float  # its calibrated probability, 0..1
    box: tuple[int, int, int, int]  # (x, y, width, height) in input-image pixels (after EXIF rotation)
    unsure: bool  # confidence below the recogniser's min_confidence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"digit": self.digit, "confidence": self.confidence, "box": list(self.box), "unsure": self.unsure}


@dataclass(frozen=True)
class NumberReading:
    """The digits found in one picture, left to right.

    ``confidence`` is the product of the digit confidences: the model's probability that
    every digit is right (digits taken as independent). No ink at all gives ``number`` None,
    ``confidence`` 0.0, no digits, and ``unsure`` True.
    """

    number: str | None  # the digits as a string, leading zeros kept; None when no digit was found
    confidence: float  # product of the digit confidences, 0..1 (0.0 without digits)
    digits: tuple[DigitReading, ...]  # left to right
    unsure: bool  # no digit found, or any digit unsure

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: number, confidence, unsure and the digits with their boxes."""
        return {
            "number": self.number,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "digits": [d.to_dict() for d in self.digits],
        }


@dataclass
class _Blob:
    x0: int
    x1: int  # exclusive
    y0: int
    y1: int  # exclusive
    area: float
    labels: list[int]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def absorb(self, other: _Blob) -> None:
        self.x0, self.x1 = min(self.x0, other.x0), max(self.x1, other.x1)
        self.y0, self.y1 = min(self.y0, other.y0), max(self.y1, other.y1)
        self.area += other.area
        self.labels += other.labels


def _blobs(ink: np.ndarray) -> tuple[np.ndarray, list[_Blob]]:
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    if count == 0:
        return labels, []
    areas = ndimage.sum_labels(np.ones_like(ink), labels, np.arange(1, count + 1))
    blobs = [
        _Blob(sl[1].start, sl[1].stop, sl[0].start, sl[0].stop, float(areas[i]), [i + 1])
        for i, sl in enumerate(ndimage.find_objects(labels))
        if sl is not None
    ]
    return labels, blobs


def _drop_lines_and_specks(blobs: list[_Blob]) -> list[_Blob]:
    upright = [b.height for b in blobs if b.width < UNDERLINE_ASPECT * b.height]
    if upright:
        digit_height = float(np.median(upright))
        blobs = [
            b for b in blobs
            if not (b.width >= UNDERLINE_ASPECT * b.height and b.width > 1.2 * digit_height)
        ]
    if not blobs:
        return []
    largest = max(b.area for b in blobs)
    return [b for b in blobs if b.area >= SPECK_FRACTION * largest]


def _merge_overlapping(blobs: list[_Blob]) -> list[_Blob]:
    groups: list[_Blob] = []
    for b in sorted(blobs, key=lambda b: b.x0):
        for g in groups:
            overlap = min(g.x1, b.x1) - max(g.x0, b.x0)
            # Stacked, not side by side: pieces of one digit share some columns but few rows
            # (a slanted "1" shares columns with its neighbour, but also most of its rows).
            rows = min(g.y1, b.y1) - max(g.y0, b.y0)
            if overlap > 0 and rows <= MERGE_OVERLAP * min(g.height, b.height):
                g.absorb(b)
                break
        else:
            groups.append(_Blob(b.x0, b.x1, b.y0, b.y1, b.area, list(b.labels)))
    # Absorbing can widen a group into a neighbour: repeat until nothing changes.
    return groups if len(groups) == len(blobs) else _merge_overlapping(groups)


def _on_the_line(groups: list[_Blob]) -> list[_Blob]:
    """Keep the groups that sit on the line of digits and are about as tall as digits.

    The line is a band of the typical (median) group height around the median group centre;
    a group mostly outside it (a stray mark above or below) or shorter than
    ``MIN_GROUP_HEIGHT`` of the typical height (a dot, a dash) is not a digit.
    """
    if not groups:
        return groups
    typical = float(np.median([g.height for g in groups]))
    centre = float(np.median([(g.y0 + g.y1) / 2 for g in groups]))
    top, bottom = centre - typical / 2, centre + typical / 2
    kept = []
    for g in groups:
        inside = min(g.y1, bottom) - max(g.y0, top)
        if inside >= LINE_OVERLAP * g.height and g.height >= MIN_GROUP_HEIGHT * typical:
            kept.append(g)
    return kept


def _local_minima(projection: np.ndarray, lo: int, hi: int, count: int) -> list[int]:
    """Up to ``count`` columns in [lo, hi) with the least ink, at least a few columns apart."""
    order = np.argsort(projection[lo:hi], kind="stable") + lo
    picked: list[int] = []
    spacing = max(2, (hi - lo) // 8)
    for c in order:
        if all(abs(int(c) - p) >= spacing for p in picked):
            picked.append(int(c))
        if len(picked) == count:
            break
    return picked


def _candidate_cuts(glyph: np.ndarray) -> list[list[int]]:
    """Ways to split a group into digits: no cut, then cuts at column-projection minima.

    A group at least ``SPLIT_ASPECT`` times wider than tall may hold touching digits; the
    classifier decides (see :func:`segment`).
    """
    h, w = glyph.shape
    options: list[list[int]] = [[]]
    if w < SPLIT_ASPECT * h or w < 6:
        return options
    projection = glyph.sum(axis=0)
    options += [[c] for c in _local_minima(projection, int(0.2 * w), int(0.8 * w) + 1, 5)]
    for n in range(3, min(6, round(w / (0.5 * DIGIT_ASPECT * h))) + 1):
        cuts = []
        for j in range(1, n):
            centre = j * w / n
            lo, hi = int(max(1, centre - 0.3 * w / n)), int(min(w - 1, centre + 0.3 * w / n))
            if hi > lo:
                cuts += _local_minima(projection, lo, hi, 1)
        options.append(sorted(set(cuts)))
    return options


def _pieces(glyph: np.ndarray, cuts: list[int]) -> list[tuple[int, int, int, int, np.ndarray]]:
    """(x, y, w, h, ink) of each non-empty part of ``glyph`` between the cuts."""
    bounds = [0, *cuts, glyph.shape[1]]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = glyph[:, a:b]
        rows = np.flatnonzero(part.max(axis=1) > 0)
        cols = np.flatnonzero(part.max(axis=0) > 0)
        if rows.size:
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            out.append((a + c0, r0, c1 - c0, r1 - r0, part[r0:r1, c0:c1]))
    return out


Classifier = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) inputs -> (N,) confidence of the best class


def segment(ink_map: InkMap, confidence: Classifier) -> list[Piece]:
    """Find the digits of a line in a cleaned picture, left to right (empty: no ink).

    ``confidence`` scores prepared digits: a group that may hold touching digits is split
    the way (or not at all) whose pieces the classifier is most sure of, by the product of
    their confidences times ``SPLIT_PENALTY`` per extra piece, so a cut must pay for itself.
    """
    ink = ink_map.ink
    labels, blobs = _blobs(ink)
    groups = _on_the_line(_merge_overlapping(_drop_lines_and_specks(blobs)))
    pieces: list[Piece] = []
    s = ink_map.scale
    for g in sorted(groups, key=lambda g: g.x0):
        region = labels[g.y0 : g.y1, g.x0 : g.x1]
        glyph = np.where(np.isin(region, g.labels), ink[g.y0 : g.y1, g.x0 : g.x1], 0.0).astype(np.float32)
        options = _candidate_cuts(glyph)
        splits = [_pieces(glyph, cuts) for cuts in options]
        # A digit spans most of the line's height: a split leaving a short stub (the end of
        # a "7"'s bar, a loop's side) is not a reading of touching digits.
        tall = MIN_PIECE_HEIGHT * glyph.shape[0]
        splits = [sp for k, sp in enumerate(splits) if k == 0 or all(p[3] >= tall for p in sp)]
        if len(splits) > 1:
            inputs = [[glyph_to_mnist(p[4]) for p in split] for split in splits]
            scores = confidence(np.stack([x for xs in inputs for x in xs]))
            products, i = [], 0
            for xs in inputs:
                products.append(float(np.prod(scores[i : i + len(xs)])) * SPLIT_PENALTY ** (len(xs) - 1))
                i += len(xs)
            best = int(np.argmax(products))
            splits, prepared = [splits[best]], [inputs[best]]
        else:
            prepared = [[glyph_to_mnist(p[4]) for p in splits[0]]]
        for (x, y, w, h, _), x28 in zip(splits[0], prepared[0]):
            box = (int((g.x0 + x) * s), int((g.y0 + y) * s), max(1, round(w * s)), max(1, round(h * s)))
            pieces.append(Piece(box=box, input=x28))
    return pieces
