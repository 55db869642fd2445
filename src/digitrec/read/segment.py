"""Reading a whole number: find each handwritten digit in a line of digits, left to right.

Recognition-based segmentation: cut generously, then let the classifier decide what the
pieces make up.

1. drop underlines: blobs far wider than tall and wider than a digit is high;
2. drop specks: blobs with less than ``SPECK_FRACTION`` of the largest blob's area;
3. merge blobs stacked above each other: sharing some columns and at most half the shorter
   one's rows (broken strokes, a "5" whose top bar came loose);
4. drop groups off the line (mostly outside the band of the median group) or too short to
   be digits (dots, dashes); the line height is the median height of the rest;
5. cut groups wide enough to hold touching digits along least-ink top-to-bottom paths
   (which follow a slanted joint), starting at minima of the column projection; the parts
   and the uncut groups are the pieces, ordered left to right;
6. every run of up to ``MAX_ATOMS`` neighbouring pieces that could be one digit is made into
   a candidate (small vertical gaps between pieces bridged) and classified, all in one batch;
7. the reading is the division of the line into candidates with the highest total score:
   log confidence (relative to the line's best-read piece), a credit per digit, a cost for
   the ink each cut crosses, penalties for digits too wide or too short (dynamic programming);
8. with a piece verifier (:mod:`digitrec.read.verifier`, a model trained on these candidates),
   each candidate also scores the log of its probability of being one whole digit: a digit
   classifier alone reads two touching digits confidently as one.

The recogniser's ``read`` then asks a line reader (:mod:`digitrec.read.linereader`, a network
that reads the whole line without cutting it) for a second opinion; :func:`line_ink` gives
it the ink of steps 1-4.

The thresholds were tuned on lines built from validation digits, ``WHOLE_WEIGHT`` on lines
built from training digits (never the test split).
The answers are :class:`~digitrec.read.readings.NumberReading` and its
:class:`~digitrec.read.readings.DigitReading` s; the recogniser's ``read`` method classifies the pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from digitrec.data.preprocess import InkMap, glyph_to_mnist
from digitrec.read.readings import DigitReading, NumberReading  # noqa: F401  (re-exported)

__all__ = [
    "SPECK_FRACTION",
    "UNDERLINE_ASPECT",
    "MERGE_OVERLAP",
    "DIGIT_CREDIT",
    "WHOLE_WEIGHT",
    "WHOLE_FLOOR",
    "Piece",
    "Candidate",
    "DigitReading",
    "NumberReading",
    "LineInk",
    "line_ink",
    "input_box",
    "candidates",
    "segment",
]

SPECK_FRACTION = 0.05  # blobs smaller than this fraction of the largest blob's area are dirt
UNDERLINE_ASPECT = 4.0  # a blob this many times wider than tall (and wider than a digit is high) is a line
SOLID_FILL = 0.6  # a flat blob whose ink covers this much of its box is a ruled line, not digits
LINE_OVERLAP = 0.3  # a digit has at least this fraction of its rows within the line's band
MIN_GROUP_HEIGHT = 0.4  # a digit is at least this fraction of the typical group's height
MERGE_OVERLAP = 0.5  # blobs sharing columns and at most this fraction of the shorter one's rows are stacked
# Segmentation (lengths in line heights, the median height of the digits on the line):
CUT_WIDTH = 0.6  # a blob at least this wide may hold touching digits and is cut into candidates
MIN_CUT_WIDTH = 0.12  # a cut leaves at least this much on either side (a "1" is about 0.15 wide)
CUT_SPACING = 0.25  # candidate cuts are at least this far apart
CUT_REACH = 0.4  # a cut path wanders at most this far from its column (slanted digits touch on a slant)
SLIVER = 0.05  # a cut part with less than this fraction of its group's ink belongs to its neighbour
BRIDGE = 0.06  # vertical gaps up to this high are closed in digits made of several pieces
MAX_ATOMS = 4  # one digit is made of at most this many pieces (blobs and cut parts)
MERGE_GAP = 0.1  # pieces further apart than this are never one digit
MAX_WIDTH = 1.6  # no digit is wider than this
WIDE_DIGIT = 1.0  # digits wider than this are unusual: they pay WIDE_PENALTY per line height beyond
WIDE_PENALTY = 4.0  # log-score cost per line height a piece is wider than WIDE_DIGIT
MIN_PIECE_HEIGHT = 0.6  # a digit spans at least this fraction of the line's height ...
SHORT_PENALTY = 5.0  # ... else it pays this much (log units): a stub, a dot, a fragment
CUT_COST = 4.0  # log-score cost per line height of ink a cut between two digits crosses
DIGIT_CREDIT = 0.05  # log-score credit per digit read, offsetting the product of more confidences
WHOLE_WEIGHT = 0.5  # weight of the log probability of "one whole digit" (the piece verifier's), per candidate
WHOLE_FLOOR = 1e-6  # that probability is counted as at least this (a finite cost for a sure "no")


@dataclass(frozen=True)
class Piece:
    """One digit found in the picture, before classification."""

    box: tuple[int, int, int, int]  # (x, y, width, height) in input-image pixels
    input: np.ndarray  # (28, 28) float32 [0, 1]: what the model will see


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
    else:
        # Nothing upright to compare with: a flat blob that fills most of its box is a ruled
        # line (a row of touching digits is flat too, but mostly empty space around strokes);
        # cut by line heights, a bar would read as a long number.
        blobs = [b for b in blobs if b.area < SOLID_FILL * b.width * b.height]
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


def _line_height(groups: list[_Blob]) -> float:
    """The typical digit height of the line: the median height of its groups."""
    return float(np.median([g.height for g in groups]))


def _cut_columns(projection: np.ndarray, height: float) -> list[int]:
    """Columns where touching digits may meet: the least inked, far enough apart.

    Each candidate leaves at least ``MIN_CUT_WIDTH`` line heights of ink on either side and
    is ``CUT_SPACING`` line heights from the others; there are at most as many as digits of
    the narrowest kind (a "1") could fit.
    """
    w = projection.size
    edge = max(1, int(MIN_CUT_WIDTH * height))
    spacing = max(2, int(CUT_SPACING * height))
    if w < 2 * edge + 1:
        return []
    # Smoothing over a stroke's width keeps a thin stroke's edge from looking like a gap.
    smooth = ndimage.uniform_filter1d(projection.astype(np.float64), max(1, int(0.08 * height)))
    picked: list[int] = []
    for c in np.argsort(smooth[edge : w - edge], kind="stable") + edge:
        if all(abs(int(c) - p) >= spacing for p in picked):
            picked.append(int(c))
        if len(picked) >= max(1, round(w / spacing) - 1):
            break
    return sorted(picked)


def _cut_path(glyph: np.ndarray, column: int, reach: int, margin: int = 0) -> np.ndarray:
    """Per row, the column of the top-to-bottom path through the least ink near ``column``.

    A shortest path (dynamic programming, one column left or right per row, at most
    ``reach`` columns from ``column`` and ``margin`` columns from either side) cuts touching
    digits along the thin joint between them rather than down a straight column through a
    stroke. The margin keeps it from escaping round the outside of the ink, where a path is
    free and cuts nothing. Moving sideways costs a little, so on blank paper it stays straight.
    """
    h, w = glyph.shape
    lo, hi = max(margin, column - reach), min(w - margin, column + reach + 1)
    cost = glyph[:, lo:hi].astype(np.float64) + 1e-3 * np.abs(np.arange(lo, hi) - column)
    total = cost[0].copy()
    step = np.zeros(cost.shape, dtype=np.int64)
    for r in range(1, h):
        options = np.stack([np.r_[np.inf, total[:-1] + 1e-2], total, np.r_[total[1:] + 1e-2, np.inf]])
        choice = np.argmin(options, axis=0)
        step[r] = choice - 1
        total = options[choice, np.arange(total.size)] + cost[r]
    path = np.empty(h, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for r in range(h - 1, 0, -1):
        path[r - 1] = path[r] + step[r, path[r]]
    return path + lo


def _split_along(glyph: np.ndarray, paths: list[np.ndarray]) -> list[np.ndarray]:
    """``glyph`` cut along the paths (left to right): one same-shaped ink array per part."""
    cols = np.arange(glyph.shape[1])[None, :]
    part = sum((cols > p[:, None]).astype(np.int64) for p in paths) if paths else np.zeros(glyph.shape, np.int64)
    return [np.where(part == k, glyph, 0.0).astype(np.float32) for k in range(len(paths) + 1)]


@dataclass(frozen=True)
class _Atom:
    """A piece of ink that belongs to one digit: a blob, or a part of a blob cut in two."""

    x0: int  # left edge of the box, working pixels
    y0: int  # top edge, working pixels
    x1: int  # right edge, exclusive
    y1: int  # bottom edge, exclusive
    ink: np.ndarray  # (y1 - y0, x1 - x0) float32, zero outside the piece
    cut: float = 0.0  # ink the cut on its left crossed, in line heights (0: not cut from a neighbour)

    @property
    def centre(self) -> float:
        cols = self.ink.sum(axis=0)
        return self.x0 + float((np.arange(cols.size) * cols).sum() / max(float(cols.sum()), 1e-6))


def _atom(ink: np.ndarray, x0: int, y0: int, cut: float = 0.0) -> _Atom | None:
    """The non-empty part of ``ink`` (placed at x0, y0) as an atom, cropped to its box."""
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return _Atom(x0 + c0, y0 + r0, x0 + c1, y0 + r1, ink[r0:r1, c0:c1], cut)


def _join_slivers(parts: list[np.ndarray], cuts: list[float]) -> list[tuple[np.ndarray, float]]:
    """Parts of a cut glyph with the ink crossed by the cut on their left (0.0 for the first),
    each part with at least ``SLIVER`` of the ink: a sliver joins the next part (the last
    part's sliver joins the one before).

    A cut path that grazes a stroke's edge leaves a sliver no digit is made of; alone it
    would be read as a "1".
    """
    total = sum(float(p.sum()) for p in parts)
    out: list[tuple[np.ndarray, float]] = []
    pending, pending_cut = np.zeros_like(parts[0]), 0.0
    for p, cut in zip(parts, [0.0, *cuts]):
        if not pending.any():
            pending_cut = cut  # the cut on the left of what will be the next part
        pending = pending + p
        if float(pending.sum()) >= SLIVER * total:
            out.append((pending, pending_cut))
            pending = np.zeros_like(p)
    if out:
        out[-1] = (out[-1][0] + pending, out[-1][1])
    else:
        out.append((pending, 0.0))
    return out


def _atoms(ink: np.ndarray, labels: np.ndarray, group: _Blob, height: float) -> list[_Atom]:
    """A group as atoms: itself, or cut along least-ink paths where touching digits may meet.

    Only groups at least ``CUT_WIDTH`` line heights wide are cut; the cuts over-segment on
    purpose, and :func:`_best_reading` puts the parts back together where they read better.
    """
    glyph = np.where(np.isin(labels[group.y0 : group.y1, group.x0 : group.x1], group.labels),
                     ink[group.y0 : group.y1, group.x0 : group.x1], 0.0).astype(np.float32)
    if len(group.labels) > 1:  # pieces stacked above each other: one digit's broken strokes
        glyph = _bridge(glyph, height)
    paths: list[np.ndarray] = []
    if group.width >= CUT_WIDTH * height:
        reach = max(1, int(CUT_REACH * height))
        margin = max(1, int(MIN_CUT_WIDTH * height))
        paths = [_cut_path(glyph, c, reach, margin) for c in _cut_columns(glyph.sum(axis=0), height)]
        # Each path may wander; kept from crossing its left neighbour, the parts stay in order.
        for k in range(1, len(paths)):
            paths[k] = np.maximum(paths[k], paths[k - 1])
    rows = np.arange(glyph.shape[0])
    crossed = [float(glyph[rows, p].sum()) / height for p in paths]
    parts = _join_slivers(_split_along(glyph, paths), crossed)
    atoms = (_atom(part, group.x0, group.y0, cut) for part, cut in parts)
    return [a for a in atoms if a is not None]


def _bridge(ink: np.ndarray, height: float) -> np.ndarray:
    """Close small vertical gaps (up to ``BRIDGE`` line heights): a broken stroke made whole.

    Applied only to digits put together from several pieces, where a gap is evidence of a
    break (a pen lift, a scan line, a fold); the classifier never saw broken strokes.
    """
    size = int(round(BRIDGE * height))
    if size < 2:
        return ink
    padded = np.pad(ink, ((size, size), (0, 0)))
    return ndimage.grey_closing(padded, size=(size + 1, 1))[size:-size]


def _union(atoms: list[_Atom], height: float) -> _Atom:
    """The atoms' ink together in one box, small vertical gaps between them bridged."""
    x0, y0 = min(a.x0 for a in atoms), min(a.y0 for a in atoms)
    x1, y1 = max(a.x1 for a in atoms), max(a.y1 for a in atoms)
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    for a in atoms:
        region = out[a.y0 - y0 : a.y1 - y0, a.x0 - x0 : a.x1 - x0]
        np.maximum(region, a.ink, out=region)
    return _Atom(x0, y0, x1, y1, _bridge(out, height), atoms[0].cut)


def _candidates(atoms: list[_Atom], height: float) -> list[tuple[int, int, _Atom]]:
    """Runs of consecutive atoms (start, end exclusive, union) that could be one digit.

    A run holds at most ``MAX_ATOMS`` atoms, each within ``MERGE_GAP`` line heights of the
    rest (horizontally), and is at most ``MAX_WIDTH`` line heights wide; single atoms are
    always candidates, so every line has a reading.
    """
    out = []
    for i in range(len(atoms)):
        out.append((i, i + 1, atoms[i]))
        x0, x1 = atoms[i].x0, atoms[i].x1
        for j in range(i + 1, min(len(atoms), i + MAX_ATOMS)):
            a = atoms[j]
            if max(a.x0 - x1, x0 - a.x1) > MERGE_GAP * height:
                break
            x0, x1 = min(x0, a.x0), max(x1, a.x1)
            if x1 - x0 > MAX_WIDTH * height:
                break
            out.append((i, j + 1, _union(atoms[i : j + 1], height)))
    return out


def _score(confidence: float, piece: _Atom, height: float, reference: float = 1.0) -> float:
    """How plausible a piece is as one digit: log confidence, a credit per digit, shape priors.

    The confidence counts relative to ``reference`` (the line's best-read piece): models
    trained with label smoothing never say 1.0, and their scale must not decide the count.
    The credit (``DIGIT_CREDIT``) offsets that a product of more confidences is smaller, so
    two digits read as one confident wide digit do not win; a piece wider than
    ``WIDE_DIGIT`` line heights pays in proportion, and one shorter than
    ``MIN_PIECE_HEIGHT`` of the line (a stub, a fragment) is almost never a digit.
    """
    score = float(np.log(max(confidence / max(reference, 1e-9), 1e-9))) + DIGIT_CREDIT
    score -= WIDE_PENALTY * max(0.0, (piece.x1 - piece.x0) / height - WIDE_DIGIT)
    if piece.y1 - piece.y0 < MIN_PIECE_HEIGHT * height:
        score -= SHORT_PENALTY
    return score


def _best_reading(candidates: list[tuple[int, int, float]], count: int) -> list[int]:
    """Indices of the candidates that cover atoms 0..count-1 in order with the highest total score."""
    best = [0.0] + [-np.inf] * count
    back = [-1] * (count + 1)
    for k, (i, j, s) in sorted(enumerate(candidates), key=lambda e: e[1][1]):
        if best[i] + s > best[j]:
            best[j], back[j] = best[i] + s, k
    chosen, j = [], count
    while j > 0:
        chosen.append(back[j])
        j = candidates[back[j]][0]
    return chosen[::-1]


def input_box(x0: float, y0: float, x1: float, y1: float, scale: float) -> tuple[int, int, int, int]:
    """(x, y, width, height) in input pixels of the working-picture box [x0, x1) x [y0, y1)."""
    return int(x0 * scale), int(y0 * scale), max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))


def _line_groups(ink: np.ndarray) -> tuple[np.ndarray, list[_Blob]]:
    """Blob labels of ``ink`` and the groups of blobs on the line of digits (steps 1-4)."""
    labels, blobs = _blobs(ink)
    return labels, _on_the_line(_merge_overlapping(_drop_lines_and_specks(blobs)))


@dataclass(frozen=True)
class LineInk:
    """The ink of a line of digits alone: specks, underlines and stray marks removed."""

    ink: np.ndarray  # (y1 - y0, x1 - x0) float32 [0, 1], the digits' ink cropped to ``box``
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of that crop in working pixels, exclusive ends
    height: float  # line height: the median height of the digits' groups, working pixels
    centre: float  # the median centre row of those groups, working pixels


def line_ink(ink_map: InkMap) -> LineInk | None:
    """The digits' ink of a line, as :func:`candidates` sees it before cutting (None: no ink)."""
    labels, groups = _line_groups(ink_map.ink)
    if not groups:
        return None
    keep = np.zeros(int(labels.max()) + 1, bool)
    for g in groups:
        keep[g.labels] = True
    x0, x1 = min(g.x0 for g in groups), max(g.x1 for g in groups)
    y0, y1 = min(g.y0 for g in groups), max(g.y1 for g in groups)
    crop = np.where(keep[labels[y0:y1, x0:x1]], ink_map.ink[y0:y1, x0:x1], 0.0).astype(np.float32)
    centre = float(np.median([(g.y0 + g.y1) / 2 for g in groups]))
    return LineInk(ink=crop, box=(x0, y0, x1, y1), height=_line_height(groups), centre=centre)


Classifier = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) inputs -> (N,) confidence of the best class
WholeDigit = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) inputs -> (N,) probability of one whole digit


@dataclass(frozen=True)
class Candidate:
    """A run of neighbouring pieces of ink that could be one digit, as the model will see it."""

    start: int  # index of its first piece (pieces ordered left to right)
    end: int  # one past its last piece
    box: tuple[int, int, int, int]  # (x, y, width, height) in input-image pixels
    input: np.ndarray  # (28, 28) float32 [0, 1]: what the model sees
    score: float  # plausibility as one digit from the classifier and shape (log units)


def candidates(ink_map: InkMap, confidence: Classifier) -> tuple[list[Candidate], int]:
    """Every candidate digit of a line of digits, scored, and the number of pieces.

    The blobs on the line, wide ones cut along least-ink paths, are the pieces, ordered left
    to right; every run of neighbouring pieces that could be one digit is a candidate and is
    classified (one batch). A reading of the line is a chain of candidates covering pieces
    0..count-1 in order (:func:`segment` picks the best). No ink: no candidates.
    """
    ink = ink_map.ink
    labels, groups = _line_groups(ink)
    if not groups:
        return [], 0
    height = _line_height(groups)
    atoms = sorted((a for g in groups for a in _atoms(ink, labels, g, height)), key=lambda a: a.centre)
    runs = _candidates(atoms, height)
    inputs = [glyph_to_mnist(piece.ink) for _, _, piece in runs]
    # A NaN confidence would never win a comparison and leave the reading without a path.
    scores = np.nan_to_num(np.asarray(confidence(np.stack(inputs)), dtype=np.float64), nan=0.0)
    reference = float(np.max(scores))
    out = []
    for (i, j, p), x, c in zip(runs, inputs, scores):
        box = input_box(p.x0, p.y0, p.x1, p.y1, ink_map.scale)
        # A digit starting at a cut pays for the ink the cut crossed: the cheaper the joint, the likelier.
        score = _score(float(c), p, height, reference) - CUT_COST * atoms[i].cut
        out.append(Candidate(start=i, end=j, box=box, input=x, score=score))
    return out, len(atoms)


def segment(ink_map: InkMap, confidence: Classifier, whole: WholeDigit | None = None) -> list[Piece]:
    """Find the digits of a line in a cleaned picture, left to right (empty: no ink).

    Recognition-based: of the :func:`candidates`, the reading is the chain with the highest
    total score (dynamic programming). So broken digits are put back together and touching
    digits are cut where the classifier is surest of the result. With ``whole`` (a model of
    whether a candidate is one whole digit, not a part or two digits run together), each
    candidate also scores ``WHOLE_WEIGHT`` times the log of that probability.
    """
    cands, count = candidates(ink_map, confidence)
    if not cands:
        return []
    scores = [c.score for c in cands]
    if whole is not None:
        p_whole = np.nan_to_num(np.asarray(whole(np.stack([c.input for c in cands])), dtype=np.float64), nan=0.0)
        scores = [s + WHOLE_WEIGHT * float(np.log(max(p, WHOLE_FLOOR))) for s, p in zip(scores, p_whole)]
    chosen = _best_reading([(c.start, c.end, s) for c, s in zip(cands, scores)], count)
    return [Piece(box=cands[k].box, input=cands[k].input) for k in chosen]
