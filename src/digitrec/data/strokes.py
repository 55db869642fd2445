"""Digits drawn from pen-stroke templates: handwriting styles MNIST's 250 writers rarely show.

MNIST's digits come from American writers of the 1990s; cheques and forms elsewhere are written
differently: a "4" closed at the top or made in one cursive stroke, a "9" with a small head and a
long slanted stem or written like a "P", a "2" with a loop at its foot or its start, a "1" with a
long flag and a foot or as one long slanted stroke, a "7" with a hooked start. Each digit here
has a few such templates: strokes given as control points in a unit box (x to the right, y
down), bent by a writer's random jitter, joined by Catmull-Rom splines and drawn with a round
pen. :func:`writer` picks one template per digit for a whole line (one person writes all of its
digits the same way); :func:`stroke_glyph` draws one digit in that style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["TEMPLATES", "stroke_glyph", "writer"]

Stroke = tuple[tuple[float, float], ...]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, turn: float, n: int = 9) -> Stroke:
    """Points on an ellipse from angle ``start`` through ``turn`` (degrees; negative turns anticlockwise on screen)."""
    return tuple((cx + rx * math.cos(math.radians(start + turn * k / (n - 1))),
                  cy + ry * math.sin(math.radians(start + turn * k / (n - 1)))) for k in range(n))


# Templates per digit: each a tuple of strokes, each stroke a tuple of control points in [0, 1]^2.
TEMPLATES: dict[int, tuple[tuple[Stroke, ...], ...]] = {
    0: (
        (_arc(0.5, 0.5, 0.42, 0.5, -90, -370, 12),),  # anticlockwise from the top, overlapping
        (_arc(0.5, 0.5, 0.38, 0.5, -100, 350, 12),),  # clockwise, a small gap
    ),
    1: (
        (((0.52, 0.0), (0.48, 1.0)),),
        (((0.15, 0.32), (0.55, 0.0), (0.5, 1.0)),),  # a long flag
        (((0.25, 0.22), (0.55, 0.0), (0.5, 1.0)), ((0.2, 1.0), (0.8, 1.0))),  # flag and foot
        (((0.95, 0.0), (0.05, 1.0)),),  # one long slanted stroke
        (((0.6, 0.14), (0.92, 0.0), (0.5, 0.5), (0.05, 1.0)),),  # a short up-stroke, then long and slanted
    ),
    2: (
        (((0.12, 0.25), (0.35, 0.02), (0.7, 0.03), (0.85, 0.28), (0.6, 0.6), (0.1, 1.0), (0.92, 0.98)),),
        # a loop where the diagonal meets the base
        (((0.12, 0.25), (0.4, 0.0), (0.78, 0.1), (0.75, 0.42), (0.25, 0.88), (0.1, 0.98), (0.28, 0.78),
          (0.4, 0.95), (0.92, 0.97)),),
        # a curled start
        (((0.3, 0.3), (0.15, 0.2), (0.3, 0.02), (0.7, 0.02), (0.82, 0.3), (0.45, 0.7), (0.12, 0.98),
          (0.5, 0.93), (0.92, 1.0)),),
        # a closed loop to start with, then over the top and down: a "2" that looks like a "9" to MNIST
        (((0.38, 0.4), (0.12, 0.32), (0.14, 0.08), (0.45, 0.0), (0.8, 0.12), (0.78, 0.42), (0.4, 0.75),
          (0.1, 1.0), (0.9, 0.97)),),
    ),
    3: (
        (((0.12, 0.12), (0.5, 0.0), (0.82, 0.18), (0.7, 0.42), (0.38, 0.5), (0.78, 0.6), (0.86, 0.85),
          (0.5, 1.0), (0.1, 0.88)),),
        (((0.1, 0.02), (0.85, 0.02), (0.4, 0.42), (0.8, 0.58), (0.85, 0.85), (0.45, 1.0), (0.1, 0.86)),),
    ),
    4: (
        (((0.4, 0.0), (0.08, 0.66), (0.95, 0.64)), ((0.72, 0.22), (0.68, 1.0))),  # open top
        (((0.7, 1.0), (0.72, 0.0), (0.05, 0.66), (0.95, 0.64)),),  # closed top, one stroke
        (((0.22, 0.0), (0.14, 0.5), (0.32, 0.66), (0.92, 0.6)), ((0.74, 0.05), (0.7, 1.0))),  # rounded corner
        (((0.25, 0.0), (0.12, 0.6), (0.75, 0.58), (0.72, 0.1), (0.7, 1.0)),),  # cursive, one stroke
    ),
    5: (
        (((0.82, 0.02), (0.3, 0.02), (0.22, 0.45), (0.55, 0.36), (0.86, 0.58), (0.82, 0.88), (0.45, 1.0),
          (0.1, 0.88)),),
        (((0.3, 0.04), (0.22, 0.45), (0.55, 0.36), (0.86, 0.58), (0.82, 0.88), (0.45, 1.0), (0.1, 0.88)),
         ((0.3, 0.04), (0.88, 0.0))),  # the flag drawn last
    ),
    6: (
        (((0.78, 0.05), (0.42, 0.12), (0.16, 0.55), (0.25, 0.94), (0.6, 1.0), (0.82, 0.75), (0.62, 0.5),
          (0.3, 0.55), (0.18, 0.72)),),
        (((0.65, 0.0), (0.3, 0.35), (0.15, 0.75), (0.4, 1.0), (0.75, 0.85), (0.7, 0.55), (0.35, 0.6)),),
    ),
    7: (
        (((0.08, 0.04), (0.92, 0.0), (0.42, 1.0)),),
        (((0.08, 0.04), (0.92, 0.0), (0.42, 1.0)), ((0.35, 0.52), (0.85, 0.5))),  # crossed
        (((0.1, 0.18), (0.14, 0.02), (0.9, 0.03), (0.5, 0.55), (0.38, 1.0)),),  # hooked start, curved stem
    ),
    8: (
        (((0.78, 0.12), (0.5, 0.0), (0.2, 0.14), (0.3, 0.4), (0.72, 0.6), (0.82, 0.86), (0.5, 1.0),
          (0.18, 0.86), (0.3, 0.6), (0.7, 0.38), (0.8, 0.14), (0.5, 0.0)),),
        (_arc(0.5, 0.25, 0.3, 0.25, 90, 360, 9), _arc(0.5, 0.73, 0.4, 0.27, -90, 360, 10)),  # two rings
    ),
    9: (
        (_arc(0.48, 0.28, 0.34, 0.28, 0, -360, 10) + ((0.8, 0.5), (0.74, 1.0)),),  # head and straight stem
        (_arc(0.52, 0.22, 0.26, 0.22, 0, -360, 10) + ((0.76, 0.45), (0.5, 1.0)),),  # small head, slanted stem
        (_arc(0.48, 0.28, 0.34, 0.28, 0, -360, 10) + ((0.8, 0.6), (0.6, 0.98), (0.28, 0.9)),),  # curled tail
        (_arc(0.52, 0.26, 0.34, 0.26, 180, 360, 10) + ((0.2, 1.0),),),  # like a "P": the stem from the loop's left
    ),
}

_SUPER = 3  # drawn this many times larger, then shrunk: smooth, anti-aliased strokes


def writer(rng: np.random.Generator) -> dict[int, int]:
    """A writer's style: the template index each digit is drawn with, for one whole line."""
    return {d: int(rng.integers(len(t))) for d, t in TEMPLATES.items()}


def _spline(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """A Catmull-Rom curve through ``points`` ((n, 2)), ``per_segment`` samples between each pair."""
    if len(points) < 3:
        return points
    p = np.vstack([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-2:-1])
    return np.vstack(out)


def stroke_glyph(label: int, height: float, pen: float, rng: np.random.Generator,
                 style: dict[int, int] | None = None) -> np.ndarray:
    """Digit ``label`` drawn with pen strokes: (H, W) float32 in [0, 1], cropped to its ink, about ``height`` px high.

    ``pen`` is the stroke width in pixels; ``style`` (from :func:`writer`) picks the template,
    a random one when it is None. Every control point moves by a random jitter of 2-6% of the
    digit's size, and the digit's width is drawn from a writer's range; a "1" may come out up to
    25% taller, as many writers make it.
    """
    templates = TEMPLATES[int(label)]
    strokes: Sequence[Stroke] = templates[style[int(label)] if style else int(rng.integers(len(templates)))]
    h = max(8.0, height * rng.uniform(0.9, 1.05))
    if label == 1:  # a "1" is often written taller than its neighbours
        h *= rng.uniform(1.0, 1.25)
    w = h * (rng.uniform(0.5, 0.8) if label != 1 else rng.uniform(0.3, 0.6))
    margin = pen * _SUPER + 2
    size = (int(w * _SUPER + 2 * margin), int(h * _SUPER + 2 * margin))
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    jitter = rng.uniform(0.02, 0.06)
    width = max(1, int(round(pen * _SUPER)))
    for stroke in strokes:
        pts = np.asarray(stroke, np.float64) + rng.normal(0.0, jitter, (len(stroke), 2))
        xy = _spline(pts) * np.array([w * _SUPER, h * _SUPER]) + margin
        draw.line([tuple(map(float, q)) for q in xy], fill=255, width=width, joint="curve")
        r = width / 2  # round pen ends
        for x, y in (xy[0], xy[-1]):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    small = img.resize((max(1, size[0] // _SUPER), max(1, size[1] // _SUPER)), Image.Resampling.BOX)
    m = np.asarray(small, np.float32) / 255.0
    rows, cols = np.flatnonzero(m.max(axis=1) > 0.1), np.flatnonzero(m.max(axis=0) > 0.1)
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if rows.size else m
