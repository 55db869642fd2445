"""Deterministic real-world-like evaluation images built from MNIST digits.

Used to measure how the preprocessing and the model hold up on input that does not look like
MNIST: digits "photographed" on paper (uneven light, off-centre on a canvas of any size, blur,
sensor noise, JPEG, dark-on-light and light-on-dark), lines of 2-6 digits written side by side
(realistic spacing, sometimes touching or broken strokes, specks, an underline), letters in
real fonts and random scribbles (for rejection). Every image is a pure function of the source
digit(s) and an integer seed, so a set is reproducible from (split, indices, seed).

Evaluation sets are built from the MNIST *test* split only and never used for training or for
tuning; tuning uses the validation split carved from the training set.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "PhotoStyle",
    "photograph",
    "photographed_digit",
    "digit_line",
    "letter_image",
    "scribble_image",
    "available_fonts",
]


@dataclass(frozen=True)
class PhotoStyle:
    """How a white-on-black ink canvas is turned into a photo of paper (all drawn at random)."""

    paper: float  # paper brightness under the light, 0..1
    ink: float  # fraction of the light the ink absorbs, 0..1
    gradient: float  # brightness change across the picture from a side light, 0..1
    angle: float  # direction of that gradient, radians
    vignette: float  # darkening towards the corners, 0..1
    noise: float  # standard deviation of paper texture and sensor noise, 0..1 units
    blur: float  # Gaussian blur radius, pixels
    jpeg: int | None  # JPEG quality, None for lossless
    light_on_dark: bool  # chalk on a board (light ink, dark background) instead of pen on paper


def _style(rng: np.random.Generator, scale: float) -> PhotoStyle:
    return PhotoStyle(
        paper=float(rng.uniform(0.6, 0.95)),
        ink=float(rng.uniform(0.55, 0.95)),
        gradient=float(rng.uniform(0.0, 0.3)),
        angle=float(rng.uniform(0, 2 * np.pi)),
        vignette=float(rng.uniform(0.0, 0.25)),
        noise=float(rng.uniform(0.0, 0.03)),
        blur=float(rng.uniform(0.0, 0.35) * scale),
        jpeg=int(rng.integers(40, 95)) if rng.random() < 0.7 else None,
        light_on_dark=bool(rng.random() < 0.25),
    )


def photograph(ink: np.ndarray, rng: np.random.Generator, scale: float = 4.0) -> np.ndarray:
    """Render white-on-black ink (float [0, 1]) as a uint8 grey photo of paper or a board.

    ``scale`` (input pixels per MNIST pixel) sizes the blur to the strokes.
    """
    style = _style(rng, scale)
    h, w = ink.shape
    if style.blur > 0.3:
        ink = ndimage.gaussian_filter(ink.astype(np.float32), style.blur)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xs / max(w - 1, 1) - 0.5) * np.cos(style.angle) + (ys / max(h - 1, 1) - 0.5) * np.sin(style.angle)
    r2 = ((xs / max(w - 1, 1) - 0.5) ** 2 + (ys / max(h - 1, 1) - 0.5) ** 2) * 2  # 0 centre, 1 corners
    light = style.paper * (1 + style.gradient * u) * (1 - style.vignette * r2)
    if style.light_on_dark:
        board = 0.25 * light
        img = board + ink * style.ink * (light - board)
    else:
        img = light * (1 - style.ink * ink)
    img = img + rng.normal(0.0, style.noise, img.shape)
    out = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if style.jpeg is not None:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=style.jpeg)
        buf.seek(0)
        out = Image.open(buf)
        out.load()
    return np.asarray(out, dtype=np.uint8)


def _upscale(digit: np.ndarray, scale: float) -> np.ndarray:
    h, w = digit.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(digit.astype(np.float32) / 255.0, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def photographed_digit(digit: np.ndarray, seed: int) -> np.ndarray:
    """One MNIST digit (uint8 28x28) as a photo: 2-8x larger, anywhere on a canvas of any size."""
    rng = np.random.default_rng(seed)
    scale = float(rng.uniform(2.0, 8.0))
    glyph = _upscale(digit, scale)
    gh, gw = glyph.shape
    ch, cw = int(gh * rng.uniform(1.1, 3.0)), int(gw * rng.uniform(1.1, 3.0))
    top, left = int(rng.integers(0, ch - gh + 1)), int(rng.integers(0, cw - gw + 1))
    canvas = np.zeros((ch, cw), np.float32)
    canvas[top : top + gh, left : left + gw] = glyph
    return photograph(canvas, rng, scale)


def digit_line(digits: Sequence[np.ndarray], seed: int, touching: float = 0.17) -> np.ndarray:
    """Several MNIST digits (uint8 28x28 each) written side by side, photographed.

    Gaps between the inks vary from touching (a fraction ``touching`` of them) to half a
    digit; a stroke is sometimes broken; specks and an underline sometimes appear.
    """
    rng = np.random.default_rng(seed)
    scale = float(rng.uniform(2.0, 5.0))
    pieces = []
    for d in digits:
        d = d.astype(np.float32)
        if rng.random() < 0.15:  # a broken stroke: a thin horizontal gap across the digit
            row = int(rng.integers(8, 20))
            d = d.copy()
            d[row : row + 1] = 0
        cols = np.flatnonzero(d.max(axis=0) > 0)
        d = d[:, cols[0] : cols[-1] + 1] if cols.size else d
        pieces.append(_upscale(d.astype(np.uint8) if d.max() > 1 else d, scale))
    # Gaps are measured between the inks themselves (row by row), as a writer spaces them:
    # slanted digits may share columns without touching.
    margin = int(rng.uniform(0.3, 1.5) * 28 * scale)
    glyph_h = max(p.shape[0] for p in pieces)
    height = glyph_h + 2 * margin + int(4 * scale)
    width = sum(p.shape[1] for p in pieces) + int(0.5 * 28 * scale) * len(pieces) + 2 * margin
    canvas = np.zeros((height, width), np.float32)
    right = np.full(height, -(10**9))  # rightmost ink column so far, per canvas row
    for i, p in enumerate(pieces):
        top = margin + int(np.clip(rng.normal(0, 1.0), -2, 2) * scale)  # a wavering baseline
        rows = np.flatnonzero(p.max(axis=1) > 0.3)
        left = np.array([np.flatnonzero(p[r] > 0.3)[0] for r in rows])
        if i == 0:
            x = margin
        else:
            gap = 0 if rng.random() < touching else int(rng.uniform(0.08, 0.5) * 28 * scale)
            x = int(np.max(right[top + rows] - left)) + 1 + gap
        region = canvas[top : top + p.shape[0], x : x + p.shape[1]]
        np.maximum(region, p[:, : region.shape[1]], out=region)
        ink_rows = top + rows
        right[ink_rows] = np.maximum(right[ink_rows], x + np.array([np.flatnonzero(p[r] > 0.3)[-1] for r in rows]))
    used = int(right.max()) + 1 + margin
    canvas = canvas[:, :used]
    width = used
    img = Image.fromarray(canvas, mode="F")
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.3:  # specks of dirt
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
            r = float(rng.uniform(0.3, 0.8) * scale)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=float(rng.uniform(0.6, 1.0)))
    if rng.random() < 0.25:  # an underline below the digits, not touching them
        y = margin + int(28 * scale) + int(rng.uniform(0.1, 0.4) * margin)
        draw.line([(margin * 0.8, y), (width - margin * 0.8, y + rng.normal(0, scale))], fill=1.0,
                  width=max(1, int(1.5 * scale)))
    return photograph(np.asarray(img, dtype=np.float32), rng, scale)


def available_fonts() -> list[Path]:
    """TrueType fonts found in the usual system folders (may be empty)."""
    found: list[Path] = []
    for root in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path("/Library/Fonts"),
                 Path("C:/Windows/Fonts")):
        if root.is_dir():
            found.extend(sorted(root.rglob("*.ttf")))
    return found


def letter_image(char: str, font: Path | None, seed: int) -> np.ndarray:
    """A letter in a real font (PIL's default font when ``font`` is None), photographed."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(40, 120))
    face = ImageFont.truetype(str(font), size) if font is not None else ImageFont.load_default(size)
    left, top, right, bottom = (int(v) for v in face.getbbox(char))
    pad = size // 2
    img = Image.new("F", (right - left + 2 * pad, bottom - top + 2 * pad), 0.0)
    ImageDraw.Draw(img).text((pad - left, pad - top), char, fill=1.0, font=face)
    return photograph(np.asarray(img, dtype=np.float32), rng, size / 28)


def scribble_image(seed: int, size: int = 160) -> np.ndarray:
    """Random pen strokes (1-4 smooth random curves), photographed: a drawing that is no digit."""
    rng = np.random.default_rng(seed)
    img = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        n = int(rng.integers(4, 12))
        pts = np.cumsum(rng.normal(0, size * 0.15, (n, 2)), axis=0) + size / 2
        pts = np.clip(pts, size * 0.1, size * 0.9)
        draw.line([tuple(p) for p in pts], fill=1.0, width=int(rng.integers(4, 12)), joint="curve")
    return photograph(np.asarray(img, dtype=np.float32), rng, size / 28)
