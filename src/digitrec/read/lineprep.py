"""Grey line images for the line reader: find the number in a picture, even out paper and ink, scale to 32 px.

The grey line reader reads the picture itself, not a binarised copy: once a threshold has
thrown a faint stroke away, nothing downstream can bring it back. What it is given is the
picture with only what every scan and photo needs evened out, in small pure steps shared by
training (:mod:`digitrec.data.paper`'s lines go through :func:`line_input` too) and reading:

    polarity      ink made bright (dark ink on light paper is inverted), judged from the tones
    scale         the whole crop 32 pixels high, the width in proportion
    flatten       the paper's own tone removed: the picture minus its grey opening, which keeps
                  every stroke thinner than the opening and drops slowly varying light
    stretch       divided by its brightest ink, so faint pencil and black pen look alike

A small picture (a cut-out line, a cheque amount, a 16x16 digit) is read whole; in a larger one
(a photo of a page) :func:`locate` finds the band of ink first and the reader reads that band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitrec.data.ink import (
    GREY_HEIGHT,
    LINE_HEIGHT,
    LINE_STRIDE,
    flatten_paper,
    ink_is_dark,
    ink_level,
    remove_paper,
)

__all__ = ["GREY_HEIGHT", "READ_WHOLE", "READ_BAND_BELOW", "MAX_LINE_WIDTH", "GreyLine", "ink_is_dark",
           "remove_paper", "ink_level", "flatten_paper", "line_input", "locate", "tighten_box"]

READ_WHOLE = 160  # pictures at most this many pixels high are read whole, unless their ink is a thin band
# ... of under this share of their height: then the band is read (chosen on generated lines of
# validation digits, 90.0/78.5% -> 91.5/80.0% spaced/touching, and the development cheques, unchanged).
READ_BAND_BELOW = 0.5
MAX_LINE_WIDTH = 64 * LINE_HEIGHT  # longest line image, pixels (a 64:1 strip; wider pictures are shrunk)


@dataclass(frozen=True)
class GreyLine:
    """A line as the grey reader sees it, and where it came from in the input picture."""

    image: np.ndarray  # (LINE_HEIGHT, W) float32 [0, 1], bright ink on black, W a multiple of LINE_STRIDE
    box: tuple[int, int, int, int]  # (x, y, width, height) of the crop that was read, input pixels
    scale: float  # line-image pixels per input pixel (across)
    inverted: bool = False  # the crop was inverted to make its ink bright (dark ink on light paper)


def line_input(gray: np.ndarray, box: tuple[int, int, int, int] | None = None) -> GreyLine:
    """The line reader's input for the grey picture ``gray`` ((H, W) [0, 1]), or for its crop ``box``."""
    x, y, w, h = box if box is not None else (0, 0, gray.shape[1], gray.shape[0])
    crop = gray[y : y + h, x : x + w].astype(np.float32)
    h, w = crop.shape
    scale = LINE_HEIGHT / h
    new_w = min(max(LINE_STRIDE, round(w * scale)), MAX_LINE_WIDTH)
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    inverted = ink_is_dark(crop)
    bright = 1.0 - crop if inverted else crop
    small = np.asarray(Image.fromarray(bright, mode="F").resize((new_w, LINE_HEIGHT), resample))
    flat = flatten_paper(np.clip(small, 0.0, 1.0))
    width = -(-new_w // LINE_STRIDE) * LINE_STRIDE
    out = np.zeros((LINE_HEIGHT, width), np.float32)
    out[:, :new_w] = flat
    return GreyLine(image=out, box=(x, y, w, h), scale=new_w / w, inverted=inverted)


def tighten_box(gray: np.ndarray, box: tuple[int, int, int, int], inverted: bool,
                margin: int) -> tuple[int, int, int, int]:
    """A digit's box found at line height, fitted to its ink in the full-resolution picture.

    At 32 px high, one line pixel is a whole band of a large photo's pixels; here the box grows
    by ``margin`` input pixels up and down (across, it stays within its columns: a neighbour's
    ink is beyond them) and then shrinks to the pixels clearly inked, half-way from the
    region's paper tone to its darkest ink. A region with no clear ink keeps the box it had.
    """
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y - margin)
    x1, y1 = min(gray.shape[1], x + w), min(gray.shape[0], y + h + margin)
    region = gray[y0:y1, x0:x1]
    if region.size == 0:
        return box
    ink = 1.0 - region if inverted else region
    paper, top = np.percentile(ink, [50.0, 99.5])
    if top - paper < 0.1:
        return box
    inked = ink > paper + 0.5 * (top - paper)
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    return (x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1)


def locate(gray: np.ndarray, ink_box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """The crop of ``gray`` to read: the whole picture when it is small, else around ``ink_box``.

    ``ink_box`` (x, y, width, height; input pixels) is the band of the line's ink as the
    cleaning pipeline found it (None: it found none). A picture up to ``READ_WHOLE`` high is
    read whole unless its ink band is under ``READ_BAND_BELOW`` of its height (a number
    written small on a larger card: read whole, its digits would shrink to a few pixels at
    line height). Without a band, a picture up to twice ``READ_WHOLE`` on its longer side and
    wider than tall is still read whole; a larger one gives None (nothing to read).
    """
    h, w = gray.shape
    if h <= READ_WHOLE and (ink_box is None or ink_box[3] >= READ_BAND_BELOW * h):
        return (0, 0, w, h)
    if ink_box is None:
        return (0, 0, w, h) if h * 4 <= w * 3 and max(h, w) <= 2 * READ_WHOLE else None
    bx, by, bw, bh = ink_box
    # A margin as the generated lines have one: a third of the line's height above and below.
    my, mx = int(round(0.35 * bh)) + 1, int(round(0.5 * bh)) + 1
    x0, y0 = max(0, bx - mx), max(0, by - my)
    x1, y1 = min(w, bx + bw + mx), min(h, by + bh + my)
    return (x0, y0, x1 - x0, y1 - y0)
