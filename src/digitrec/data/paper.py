"""Realistic grey number lines made from MNIST digits: paper, ruling, marks and scanner effects.

The grey line reader (:mod:`digitrec.read.linereader`) is trained on these, never on real images:
a line of MNIST *training* digits is composed as a writer spaces digits (touching,
overlapping, slanted, thinner or thicker pen), then printed on simulated paper the way cheques,
forms and registers look when scanned or photographed:

- paper tone and tint from near-white to dark grey, uneven light, fibre noise, and the wavy
  security patterns (guilloche) of cheque paper;
- printed underlines, ruling lines and box borders, touching the digits or not;
- marks that are not digits: thousand separators (``.`` ``,``), dashes, ``=``, ``+``, ``*``,
  ``$`` and ``#`` before or after the number (no lone ``/``: it cannot be told from a ``1``);
- other writers' styles: smooth random warps (elastic distortion), flagged "1"s and crossed "7"s,
  and in some lines digits drawn from pen-stroke templates instead of MNIST (:mod:`strokes`);
- ink from black to faint, resolution from 14 to 72 pixels high, blur, noise, JPEG, both
  polarities, and cropping that cuts into the first or last digit.

The numbers themselves are not all uniform random digits: written numbers are often round
(amounts, quantities: "2500", "40000") and repeat digits ("1100"), and a reader that has
rarely seen "000" drops zeros, so :func:`line_digits` makes some lines so.

About one line in twenty holds no digit at all (paper, rules, marks, a printed word), so the
reader learns to answer "no number" for those. Every random choice comes from the caller's
``numpy`` generator: the same seed gives the same lines.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from digitrec.data.strokes import stroke_glyph, writer

__all__ = ["NO_DIGITS", "STROKE_WRITERS", "ROUND_NUMBERS", "REPEATS", "line_digits", "render_line"]

NO_DIGITS = 0.05  # share of lines that hold no digit (paper, rules, marks, words only)
STROKE_WRITERS = 0.3  # share of lines whose digits are drawn from pen-stroke templates, not MNIST
ROUND_NUMBERS = 0.3  # share of lines whose number ends in one or more zeros after a non-zero digit
REPEATS = 0.1  # share of lines where one digit is written two or three times in a row
_WORK_HEIGHT = 40  # digits' height while composing, pixels (lines are shrunk or enlarged after)
_WORDS = ("Pesos", "total", "AMOUNT", "No.", "Fecha", "pay", "Cheque", "firma", "USD", "ab", "x", "Date")


def line_digits(n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``n`` digits (int64, 0-9) of one line's number: round, with a repeated digit, or uniform."""
    digits = rng.integers(0, 10, n)
    u = rng.random()
    if n >= 2 and u < ROUND_NUMBERS:
        zeros = int(rng.integers(1, n))  # "7000", "150", "40"; the digit before the zeros is not 0
        digits[n - zeros :] = 0
        digits[n - zeros - 1] = rng.integers(1, 10)
    elif n >= 2 and u < ROUND_NUMBERS + REPEATS:
        run = min(n, int(rng.integers(2, 4)))
        start = int(rng.integers(0, n - run + 1))
        digits[start : start + run] = digits[start]
    return digits


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font (shipped with Pillow, no system font needed)."""
    return ImageFont.load_default(size=size)


def _elastic(d: np.ndarray, rng: np.random.Generator, alpha: float = 2.5, sigma: float = 3.0) -> np.ndarray:
    """A smooth random warp of a 28x28 digit (Simard et al., 2003): other writers' wobble."""
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, d.shape), sigma) * alpha / 0.1  # ~alpha px at most
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, d.shape), sigma) * alpha / 0.1
    ys, xs = np.mgrid[0 : d.shape[0], 0 : d.shape[1]]
    return ndimage.map_coordinates(d, [ys + dy, xs + dx], order=1, mode="constant").astype(np.float32)


_STYLED = {1: 0.5, 7: 0.35, 2: 0.3, 9: 0.3}  # share of each digit restyled by _styled


def _styled(d: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    """Handwriting MNIST rarely shows: a "1" with a long flag, a crossed "7", a looped "2", a "9" with a curled tail."""
    if label not in _STYLED or rng.random() > _STYLED[label]:
        return d
    rows = np.flatnonzero(d.max(axis=1) > 0.3)
    if rows.size < 8:
        return d
    img = Image.fromarray((d * 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(img)
    top, bottom = int(rows[0]), int(rows[-1])
    width = int(rng.integers(2, 4))
    if label in (2, 9):
        foot = d[max(top, bottom - 3) : bottom + 1] > 0.3  # the lowest rows of ink
        cols = np.flatnonzero(foot.any(axis=0))
        if cols.size == 0:
            return d
        size = (bottom - top) * rng.uniform(0.16, 0.26)
        if label == 2:  # a loop where the diagonal meets the base, as many writers make it
            x, y = float(cols[0]) + size * rng.uniform(0.5, 0.9), bottom - size * rng.uniform(1.0, 1.3)
            draw.ellipse([x - size, y - size * 0.8, x + size, y + size * 0.8], outline=255, width=2)
        else:  # the tail of the stem curled back to the left, as a "g"'s
            x, y = float(cols[-1] if rng.random() < 0.3 else cols.mean()), float(bottom)
            draw.line([(x, y - size), (x - size * 0.5, y), (x - size * 1.6, y - size * 0.3),
                       (x - size * 2.0, y - size * 1.0)], fill=255, width=width, joint="curve")
        return np.maximum(d, np.asarray(img, np.float32) / 255.0)
    if label == 1:  # from the top of the stroke down to the left
        cols = np.flatnonzero(d[top] > 0.3)
        x = float(cols.mean())
        length = (bottom - top) * rng.uniform(0.25, 0.7)  # up to the long flag of "1"s written like a caret
        draw.line([(x, top), (x - length * rng.uniform(0.6, 1.0), top + length * rng.uniform(0.5, 0.9))],
                  fill=255, width=width)
    else:  # across the stem, a little below the middle
        y = int(top + (bottom - top) * rng.uniform(0.45, 0.6))
        cols = np.flatnonzero(d[y] > 0.3)
        if cols.size == 0:
            return d
        x, half = float(cols.mean()), (bottom - top) * rng.uniform(0.18, 0.3)
        draw.line([(x - half, y), (x + half, y + rng.uniform(-1.5, 1.5))], fill=255, width=width)
    return np.maximum(d, np.asarray(img, np.float32) / 255.0)


def _glyph(digit: np.ndarray, label: int, height: float, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit, restyled and warped a little, cropped to its ink and scaled to about ``height`` px."""
    d = digit.astype(np.float32) / 255.0
    if rng.random() < 0.5:
        d = _elastic(d, rng)
    d = _styled(d, label, rng)
    rows, cols = np.flatnonzero(d.max(axis=1) > 0.1), np.flatnonzero(d.max(axis=0) > 0.1)
    if rows.size:
        d = d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = height * rng.uniform(0.88, 1.08) / max(d.shape[0], 10)
    squeeze = rng.uniform(0.8, 1.2) if rng.random() < 0.7 else rng.uniform(0.6, 0.8)  # compact writers too
    size = (max(1, round(d.shape[1] * scale * squeeze)), max(1, round(d.shape[0] * scale)))
    return np.clip(np.asarray(Image.fromarray(d, mode="F").resize(size, Image.Resampling.BILINEAR)), 0.0, 1.0)


def _text_mask(text: str, size: int) -> np.ndarray:
    """A printed string's ink as a float mask (1 = ink), cropped to its ink."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, right - left + 2), max(1, bottom - top + 2)), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=255, font=font)
    m = np.asarray(img, np.float32) / 255.0
    rows, cols = np.flatnonzero(m.max(axis=1) > 0), np.flatnonzero(m.max(axis=0) > 0)
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if rows.size else m


def _mark(kind: str, h: int, pen: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A hand-drawn non-digit mark: its ink mask and its vertical centre (fraction of ``h`` from the top)."""
    if kind in "$#*+":
        m = _text_mask(kind, max(8, int(h * (1.0 if kind in "$#" else 0.7))))
        return m, 0.5 if kind in "$#" else rng.uniform(0.3, 0.6)
    w = {"." : pen * 2 + 2, ",": pen * 2 + 3, "-": int(h * rng.uniform(0.3, 0.7)), "=": int(h * rng.uniform(0.4, 0.7)),
         "/": int(h * 0.5)}[kind]
    size = (max(w, 2) + 2 * pen, h)
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    if kind == ".":
        r = pen + rng.integers(0, 2)
        draw.ellipse([pen, h - 2 * r - 2, pen + 2 * r, h - 2], fill=255)
        return np.asarray(img, np.float32)[:, : pen + 2 * r + 2] / 255.0, 0.5
    if kind == ",":
        draw.line([(w, h - pen - int(h * 0.12)), (pen, h - 1)], fill=255, width=pen + 1)
        return np.asarray(img, np.float32) / 255.0, 0.5
    if kind == "-":
        y = int(h * rng.uniform(0.4, 0.65))
        draw.line([(pen, y), (w, y + int(rng.integers(-2, 3)))], fill=255, width=pen)
    elif kind == "=":
        y = int(h * rng.uniform(0.3, 0.5))
        gap = max(pen + 2, int(h * 0.2))
        draw.line([(pen, y), (w, y)], fill=255, width=pen)
        draw.line([(pen, y + gap), (w, y + gap)], fill=255, width=pen)
    else:  # "/"
        draw.line([(w, int(h * 0.1)), (pen, h - 1)], fill=255, width=pen)
    return np.asarray(img, np.float32) / 255.0, 0.5


def _compose(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Ink of the digits (and marks) side by side at work scale: (mask, top of digits, bottom of digits)."""
    h = _WORK_HEIGHT
    pen = max(1, int(round(h * rng.uniform(0.04, 0.1))))
    spacing = rng.uniform(-0.08, 0.3)  # the writer's mean gap, in digit heights
    pieces: list[tuple[np.ndarray, float]] = []  # (mask, vertical centre offset in px from line centre)
    n = len(digits)
    lead = rng.random()
    if n and lead < 0.08:
        m, c = _mark(str(rng.choice(list("$#*"))), h, pen, rng)
        pieces.append((m, (c - 0.5) * h))
    separators = rng.random() < 0.4
    sep = str(rng.choice([".", ".", ","]))
    small_zeros = rng.uniform(0.55, 0.85) if rng.random() < 0.3 else 1.0  # "000" written small, as amounts often are
    # Styles MNIST's writers rarely use (closed "4"s, small-headed "9"s, ...): one writer per line.
    style = writer(rng) if rng.random() < STROKE_WRITERS else None
    stroke_pen = rng.uniform(2.5, 5.5)  # that writer's pen, px at work scale (MNIST's is about 5)
    glyphs: list[int] = []  # indices in ``pieces`` of the digits, for joining strokes
    for i, (digit, label) in enumerate(zip(digits, labels)):
        size = h * (small_zeros if label == 0 else 1.0)
        glyphs.append(len(pieces))
        if style:
            glyph = stroke_glyph(int(label), size, stroke_pen, rng, style)
        else:
            glyph = _glyph(digit, int(label), size, rng)
        pieces.append((glyph, (h - size) / 2 * rng.uniform(0.3, 1.0) + rng.normal(0.0, 0.04 * h)))
        left = n - 1 - i  # digits still to come
        if separators and left > 0 and left % 3 == 0:
            m, _ = _mark(sep, h, pen, rng)
            pieces.append((m, h / 2 - m.shape[0] / 2 + rng.normal(0, 0.05 * h)))
        elif left > 0 and rng.random() < 0.02:
            m, _ = _mark(str(rng.choice([".", ",", "-"])), h, pen, rng)
            pieces.append((m, (h - m.shape[0]) / 2))
    if rng.random() < (0.35 if n else 0.8):
        # No lone "/": a slanted stroke after the number is too often a "1" (it taught dropping them).
        kinds = ["-", "=", ".", "+", "*", ",", "-", "="]
        for _ in range(1 if rng.random() < 0.8 else 2):
            m, c = _mark(str(rng.choice(kinds)), h, pen, rng)
            pieces.append((m, (c - 0.5) * h if m.shape[0] == h else h / 2 - m.shape[0] / 2))
    if not n and rng.random() < 0.5:
        word = str(rng.choice(_WORDS))
        pieces.insert(0, (_text_mask(word, int(h * rng.uniform(0.6, 1.0))), 0.0))
    width = sum(p.shape[1] for p, _ in pieces) + int(h * 0.5) * len(pieces) + 2 * h
    canvas = np.zeros((3 * h, max(width, h)), np.float32)
    x = h // 2
    placed: list[tuple[int, int]] = []  # (top, left) of each piece on the canvas
    for i, (p, dy) in enumerate(pieces):
        if i:
            x += int(round(h * (spacing + rng.uniform(-0.1, 0.12))))
            x = max(x, 0)
        top = int(round(1.5 * h - p.shape[0] / 2 + dy))
        top = min(max(top, 0), canvas.shape[0] - p.shape[0])
        placed.append((top, x))
        region = canvas[top : top + p.shape[0], x : x + p.shape[1]]
        np.maximum(region, p[:, : region.shape[1]], out=region)
        x += p.shape[1]
    if len(glyphs) > 1 and rng.random() < 0.25:  # joined-up writing: a stroke from one digit into the next
        _join(canvas, [(pieces[i][0], *placed[i]) for i in glyphs], pen, rng)
    if rng.random() < 0.6:  # a thinner pen than MNIST's (a ballpoint's line); sometimes thicker
        canvas = _thinner(canvas, rng) if rng.random() < 0.8 else ndimage.grey_dilation(canvas, size=(2, 2))
    return canvas, h, 2 * h


def _thinner(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ink drawn with a thinner pen: eroded by 1-2 pixels, less where that would wipe strokes out."""
    size = 3 if rng.random() < 0.5 else 2
    thin = ndimage.grey_erosion(canvas, size=(size, size))
    if size == 3 and (thin > 0.5).sum() < 0.35 * (canvas > 0.5).sum():  # strokes too thin to lose two pixels
        thin = ndimage.grey_erosion(canvas, size=(2, 2))
    return thin


def _join(canvas: np.ndarray, digits: list[tuple[np.ndarray, int, int]], pen: int, rng: np.random.Generator) -> None:
    """Draw ligatures between neighbouring digits ((mask, top, left) each) onto ``canvas``, in place.

    A stroke leaves the right edge of a digit's ink in its upper or lower part and enters the
    next digit's left edge, as in joined-up writing ("ooo" written in one go).
    """
    img = Image.new("L", (canvas.shape[1], canvas.shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for (a, ay, ax), (b, by, bx) in zip(digits, digits[1:]):
        if rng.random() < 0.3:
            continue
        band = (0.0, 0.5) if rng.random() < 0.5 else (0.5, 1.0)  # upper or lower part of the digits
        ends = []
        for m, y, x, right in ((a, ay, ax, True), (b, by, bx, False)):
            lo, hi = int(band[0] * m.shape[0]), max(int(band[1] * m.shape[0]), int(band[0] * m.shape[0]) + 1)
            ys, xs = np.nonzero(m[lo:hi] > 0.4)
            if xs.size == 0:
                break
            k = int(np.argmax(xs)) if right else int(np.argmin(xs))
            ends.append((x + int(xs[k]), y + lo + int(ys[k])))
        if len(ends) == 2 and ends[1][0] - ends[0][0] < 1.5 * canvas.shape[0] / 3:
            (x0, y0), (x1, y1) = ends
            mid = ((x0 + x1) / 2, (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * canvas.shape[0] / 3)
            draw.line([(x0, y0), mid, (x1, y1)], fill=int(rng.integers(150, 256)), width=pen + 1, joint="curve")
    np.maximum(canvas, np.asarray(img, np.float32) / 255.0, out=canvas)


def _shear_rotate(mask: np.ndarray, shear: float, angle: float) -> np.ndarray:
    """Slant (x += shear * (centre - y)) and rotate the ink by ``angle`` degrees, keeping it whole."""
    h, w = mask.shape
    a, b = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # Inverse map for PIL: output (x, y) -> input; slant about the middle row, then rotation.
    pad = int(abs(shear) * h / 2 + abs(b) * w / 2) + 2
    out_w = w + 2 * pad
    cx, cy = out_w / 2, h / 2
    # forward: x' = a*(x + shear*(cy - y) - cx0) - b*(y - cy) + cx ; y' = b*(...) + a*(y - cy) + cy
    m = np.array([[a, -a * shear - b], [b, a - b * shear]])
    inv = np.linalg.inv(m)
    cx0 = w / 2
    offset = np.array([cx0, cy]) - inv @ np.array([cx, cy])
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    img = Image.fromarray(mask, mode="F").transform((out_w, h), Image.Transform.AFFINE, coeffs,
                                                    resample=Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)


def _guilloche(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Wavy security-paper lines: a few families of sinusoids, thin and faint."""
    out = np.zeros((h, w), np.float32)
    xs = np.arange(w, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        period = rng.uniform(0.4, 2.5) * h
        amp = rng.uniform(0.05, 0.5) * h
        step = rng.uniform(0.08, 0.3) * h
        phase_step = rng.uniform(-0.6, 0.6)
        for k in range(int(-amp / step) - 1, int((h + amp) / step) + 2):
            y = k * step + amp * np.sin(2 * np.pi * xs / period + k * phase_step)
            y0 = np.floor(y).astype(int)
            frac = y - y0
            for dy, wgt in ((0, 1 - frac), (1, frac)):
                rows = y0 + dy
                ok = (rows >= 0) & (rows < h)
                out[rows[ok], xs[ok].astype(int)] = np.maximum(out[rows[ok], xs[ok].astype(int)], wgt[ok])
    return out


def _rules(h: int, w: int, top: float, bottom: float, rng: np.random.Generator) -> np.ndarray:
    """Printed underlines, ruling lines and box borders (1 = full darkness)."""
    out = np.zeros((h, w), np.float32)
    thick = int(rng.integers(1, 4))
    if rng.random() < 0.55:  # underline near the digits' foot, sometimes crossing it
        y = int(round(bottom + rng.uniform(-0.1, 0.3) * (bottom - top)))
        x0 = int(rng.uniform(0, 0.3) * w) if rng.random() < 0.3 else 0
        if rng.random() < 0.12:  # dotted
            out[max(0, y) : y + thick, x0:][:, (np.arange(w - x0) // 3) % 2 == 0] = 1.0
        else:
            out[max(0, y) : y + thick, x0:] = rng.uniform(0.5, 1.0)
    if rng.random() < 0.15:
        y = int(round(top - rng.uniform(0.05, 0.4) * (bottom - top)))
        out[max(0, y) : max(0, y) + thick, :] = rng.uniform(0.4, 1.0)
    if rng.random() < 0.04:  # box borders at the sides (rare: a border looks like a "1")
        for x in (int(rng.integers(0, max(1, w // 12))), w - 1 - int(rng.integers(0, max(1, w // 12)))):
            out[:, max(0, x) : x + thick] = rng.uniform(0.5, 1.0)
    return out


def _smooth_noise(h: int, w: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def render_line(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey picture (H, W) float32 in [0, 1] of the MNIST digits ``digits`` ((n, 28, 28) uint8) as written on paper.

    ``labels`` are the digits' classes (some are restyled by class). ``n`` may be 0 (a line
    with no digit). Usually dark ink on lighter paper (sometimes inverted); H is 14 to 72
    pixels, as a scan or a phone photo crops a line.
    """
    mask, top, bottom = _compose(digits, labels, rng)
    mask = _shear_rotate(mask, shear=rng.uniform(-0.15, 0.4), angle=rng.normal(0.0, 1.5))
    rows, cols = np.flatnonzero(mask.max(axis=1) > 0.05), np.flatnonzero(mask.max(axis=0) > 0.05)
    if rows.size == 0:
        rows, cols = np.array([int(top), int(bottom) - 1]), np.array([0, mask.shape[1] - 1])
    digit_h = bottom - top
    # Frame: the digits fill 40-100% of the height; margins at the sides; sometimes a cut edge.
    fill = rng.uniform(0.4, 1.0)
    out_h = max(int(round(digit_h / fill)), int(rows[-1] - rows[0] + 1) if rng.random() < 0.5 else 1)
    y_mid = (top + bottom) / 2 + rng.normal(0.0, 0.08) * out_h
    y0 = int(round(y_mid - out_h / 2))
    def margin() -> int:  # mostly some paper beside the digits, sometimes a cut into the first or last
        return int(round(digit_h * (rng.uniform(-0.15, 0.05) if rng.random() < 0.12 else rng.uniform(0.05, 0.8))))

    x0, x1 = int(cols[0]) - margin(), int(cols[-1]) + 1 + margin()
    if x1 - x0 < 0.85 * (cols[-1] + 1 - cols[0]):  # two cut edges on a narrow line would cut a digit away
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
    pad_y, pad_x = max(0, -y0, y0 + out_h - mask.shape[0]), max(0, -x0, x1 - mask.shape[1])
    if pad_y or pad_x:
        mask = np.pad(mask, ((pad_y, pad_y), (pad_x, pad_x)))
        y0, x0, x1 = y0 + pad_y, x0 + pad_x, x1 + pad_x
        top, bottom = top + pad_y, bottom + pad_y
    ink = np.clip(mask[y0 : y0 + out_h, x0:x1], 0.0, 1.0)
    h, w = ink.shape
    rel_top, rel_bottom = top - y0, bottom - y0

    paper_level = rng.uniform(0.6, 0.98) if rng.random() < 0.85 else rng.uniform(0.3, 0.6)
    paper = np.full((h, w), paper_level, np.float32)
    paper += 0.06 * rng.random() * _smooth_noise(h, w, rng.uniform(4, 20), rng)  # uneven tone
    if rng.random() < 0.3:  # light falling off across the picture
        paper += np.linspace(0, rng.uniform(-0.25, 0.25), w, dtype=np.float32)[None, :]
    if rng.random() < 0.55:
        paper -= rng.uniform(0.05, 0.3) * paper_level * _guilloche(h, w, rng)
    paper += rng.uniform(0.0, 0.04) * _smooth_noise(h, w, rng.uniform(0.5, 1.2), rng)  # fibres
    contrast = rng.uniform(0.35, 0.9) if rng.random() < 0.9 else rng.uniform(0.18, 0.35)  # faint pencil at times
    ink_level = paper_level * (1.0 - contrast) if paper_level > 0.45 else max(0.0, paper_level - contrast)
    rules = _rules(h, w, rel_top, rel_bottom, rng)
    if rules.any():
        rule_level = ink_level if rng.random() < 0.5 else paper_level * rng.uniform(0.3, 0.8)
        paper = paper - rules * (paper - rule_level)
    ink_var = 1.0 + 0.15 * rng.random() * _smooth_noise(h, w, rng.uniform(1, 6), rng)  # uneven pen pressure
    img = paper - np.clip(ink * ink_var, 0.0, 1.0) * (paper - ink_level)

    # The scanner or camera: resolution, blur, noise, compression.
    target_h = int(round(math.exp(rng.uniform(math.log(36), math.log(72))))) if rng.random() < 0.65 else \
        int(rng.integers(14, 37))
    scale = target_h / h
    size = (max(4, round(w * scale)), target_h)
    img = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX
                                                                              if scale < 1 else
                                                                              Image.Resampling.BILINEAR))
    if rng.random() < 0.4:
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.0))
    img = img + rng.uniform(0.0, 0.05) * rng.standard_normal(img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0)
    if rng.random() < 0.05:
        img = 1.0 - img
    if rng.random() < 0.5:
        buf = io.BytesIO()
        Image.fromarray((img * 255).astype(np.uint8), mode="L").save(buf, "JPEG", quality=int(rng.integers(25, 95)))
        img = np.asarray(Image.open(buf), np.float32) / 255.0
    return img.astype(np.float32)
