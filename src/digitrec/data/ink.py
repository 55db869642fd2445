"""Paper and ink in grey pictures: which way the ink runs, the paper's tone taken out, how bright the ink is.

Small pure steps shared by the grey line reader's preparation (:mod:`digitrec.read.lineprep`)
and the grey digit-crop path of :func:`digitrec.data.preprocess.to_mnist`; also the line
reader's input geometry, which every stage agrees on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["LINE_HEIGHT", "LINE_STRIDE", "GREY_HEIGHT", "ink_is_dark", "remove_paper", "ink_level", "flatten_paper"]

LINE_HEIGHT = 32  # height of a line reader's input, pixels (digits are 20 high in it, as in MNIST)
LINE_STRIDE = 4  # a line reader's input columns per output frame
GREY_HEIGHT = LINE_HEIGHT  # height grey pictures are evened out at, pixels (the opening's size is set for it)
_OPENING = 9  # side of the grey opening that estimates the paper at 32 px height, pixels
_MIN_STRETCH = 0.12  # ink is divided by at least this: on blank paper the texture stays faint


def ink_is_dark(gray: np.ndarray) -> bool:
    """True when a grey picture's ink is darker than its paper."""
    low, middle, high = np.percentile(gray, [0.2, 50.0, 99.8])
    # Paper is the bulk of the picture, so the median is the paper's tone; ink is the extreme
    # furthest from it (a thin "1" can be under 1% of the pixels, so no wider percentiles).
    return bool(middle - low > high - middle)


def remove_paper(ink: np.ndarray) -> np.ndarray:
    """Bright-ink picture at line height -> the strokes above the paper's own tone (the grey opening), unstretched."""
    paper = ndimage.grey_opening(ink, size=(_OPENING, _OPENING), mode="nearest")
    return np.clip(ink - paper, 0.0, None)


def ink_level(flat: np.ndarray) -> float:
    """How bright the brightest ink of a paper-free picture is (its 99.5th percentile; 0 when empty)."""
    return float(np.percentile(flat, 99.5)) if flat.size else 0.0


def flatten_paper(ink: np.ndarray) -> np.ndarray:
    """Bright-ink picture at line height -> ink on black in [0, 1]: paper tone removed, ink stretched."""
    flat = remove_paper(ink)
    return np.clip(flat / max(ink_level(flat), _MIN_STRETCH), 0.0, 1.0).astype(np.float32)
