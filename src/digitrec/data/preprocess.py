"""Image preprocessing: any picture of a digit -> the model's 28x28 input in the MNIST convention.

MNIST digits are white ink on black, fitted into a 20x20 box with their aspect ratio kept, and
centred by centre of mass in a 28x28 frame. Each step below is a small pure function so that
the CLI, the Python API and the server share exactly one pipeline, and so that steps can be
tested (and improved) one at a time. The normalisation constants live here and nowhere else.

The pipeline for a photo, scan or drawing (:func:`to_mnist`)::

    open_image        allowed formats only, EXIF orientation, first frame, size limits
                      (a JPEG over the pixel limit is decoded at 1/2, 1/4 or 1/8 scale)
    to_grayscale      any mode -> grey [0, 1]; transparency composited on white
    limit_size        shrink very large pictures to a working size (speed; digits stay legible)
    to_white_on_black polarity: dark ink on light paper is inverted so that ink is bright
    remove_background uneven light and paper tone: a white top-hat (image minus its opening)
    clean_ink         3x3 median, hysteresis threshold, specks dropped; grey levels kept
    crop_to_ink       bounding box of the ink
    fit_in_box        longest side 20 px, aspect ratio kept
    center_by_mass    centre of mass in the middle of 28x28

An image that is already MNIST-like (28x28, white on black) passes through unchanged. An
image without ink raises :class:`NoDigitError` ("no digit found") instead of being guessed at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image
from scipy import ndimage

from digitrec.data import decode
from digitrec.data.decode import (  # noqa: F401  (re-exported: the first step of the pipeline)
    IMAGE_FORMATS,
    MAX_PIXELS,
    DecodedImage,
    decode_image,
    image_size,
    open_image,
)
from digitrec.data.ink import GREY_HEIGHT, ink_is_dark, ink_level, remove_paper
from digitrec.errors import ImageError, first_line

if TYPE_CHECKING:  # inference through ONNX Runtime prepares images without importing PyTorch
    import torch

__all__ = [
    "MAX_PIXELS",
    "IMAGE_FORMATS",
    "DecodedImage",
    "decode_image",
    "open_image",
    "image_size",
    "Normalization",
    "NORMALIZATION",
    "IMAGE_SIZE",
    "BOX_SIZE",
    "MIN_CONTRAST",
    "WORK_SIZE",
    "ImageSource",
    "NoDigitError",
    "InkMap",
    "normalize",
    "to_grayscale",
    "load_gray",
    "decode_gray",
    "to_white_on_black",
    "limit_size",
    "remove_background",
    "otsu_threshold",
    "clean_ink",
    "ink_map",
    "crop_to_ink",
    "fit_in_box",
    "center_by_mass",
    "is_mnist_like",
    "glyph_to_mnist",
    "to_mnist",
]


@dataclass(frozen=True)
class Normalization:
    """Per-pixel standardisation applied after scaling pixels to [0, 1]."""

    mean: float  # mean pixel value of the MNIST training images, in [0, 1] units
    std: float  # standard deviation of those pixels, same units


# Computed over the 60,000 MNIST training images (pixels scaled to [0, 1]).
NORMALIZATION = Normalization(mean=0.1307, std=0.3081)
IMAGE_SIZE = 28  # side of the model input, pixels
BOX_SIZE = 20  # side of the box the ink is fitted into, pixels (MNIST convention)
_INK_THRESHOLD = 0.2  # grey level (0..1, ink = 1) above which a pixel counts as ink
WORK_SIZE = 1024  # longer side that larger pictures are shrunk to before analysis, pixels
# Ink must stand out from the paper by this much (fraction of full scale) to count at all:
# above paper texture, sensor noise and JPEG ringing, below faint pencil in a dim photo.
MIN_CONTRAST = 0.15
SPECK_FRACTION = 0.05  # ink blobs smaller than this fraction of the largest blob's area are dirt
_NOISE_MARGIN = 12.0  # ink must be this many background-noise standard deviations bright
_MIN_BLOB_PIXELS = 6  # the largest blob must have at least this many pixels (working scale)
_TINY = 32  # pictures at most this many pixels on their shorter side are crops of one digit
GREY_CROP_MAX = 160  # pictures at most this many pixels on their longer side may be read as grey crops
GREY_MIN_INK = 0.3  # a grey crop's ink must stand this far above its paper (0..1; cheque patterns are fainter)
GREY_TALL = 0.4  # in a grey crop, a digit's stroke spans at least this fraction of the height
GREY_PART = 0.15  # in a grey crop, strokes under this fraction of the largest one's area are paper pattern
_HALF_MAD = 0.5926  # 1.4826 x the MAD of the lower half of normal noise, in standard deviations


class NoDigitError(ImageError):
    """The image holds no ink: there is no digit to recognise (not a guess, not a crash)."""


ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray


def normalize(images: torch.Tensor, norm: Normalization = NORMALIZATION) -> torch.Tensor:
    """Scale uint8 (0..255) or float ([0, 1]) images to the model's standardised float input."""
    x = images.float()
    if not images.dtype.is_floating_point:  # uint8 pixels
        x = x / 255.0
    return (x - norm.mean) / norm.std


def _value_range(values: np.ndarray) -> float:
    """The full-scale value of grey levels whose range the type does not state (16/32-bit)."""
    top = float(values.max())
    return 1.0 if top <= 1.0 else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Convert any mode to a float32 grey image in [0, 1]; transparency is composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return np.clip(arr / _value_range(arr), 0.0, 1.0).astype(np.float32)
    try:
        grey = img.convert("L")
    except ValueError as exc:  # a pixel mode Pillow cannot convert (some TIFF layouts)
        raise ImageError(f"unsupported pixel mode {img.mode} ({first_line(exc)})") from exc
    return np.asarray(grey, dtype=np.float32) / 255.0


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def to_white_on_black(gray: np.ndarray) -> np.ndarray:
    """Invert dark-ink-on-light-paper images so that ink is bright, as in MNIST.

    The paper's tone is taken from the image border, where a framed digit rarely reaches, and
    compared with the middle of the image's own tonal range (not with a fixed 0.5), so that
    grey paper in a dim photo still counts as light and a grey chalkboard as dark.
    """
    low, high = np.percentile(gray, [0.1, 99.9])
    middle = (float(low) + float(high)) / 2 if high - low > 1e-3 else 0.5
    # A tiny scan (a 16x16 postal digit) is cropped to its digit, whose strokes run along the
    # border: there the paper is told by the bulk of the pixels instead.
    paper = gray if min(gray.shape) <= _TINY else _border(gray)
    return 1.0 - gray if float(np.median(paper)) > middle else gray


def limit_size(gray: np.ndarray, max_side: int = WORK_SIZE) -> tuple[np.ndarray, float]:
    """Shrink (area-averaging) so that the longer side is at most ``max_side``.

    Returns the image and the factor from its pixels back to the input's (1.0 if unchanged).
    """
    h, w = gray.shape
    if max(h, w) <= max_side:
        return gray, 1.0
    scale = max_side / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    out = np.asarray(img.resize((new_w, new_h), Image.Resampling.BOX), dtype=np.float32)
    return out, max(h, w) / max(new_h, new_w)


def _flatten(ink: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Subtract a smooth (quadratic) light surface fitted to the paper, ignoring the ink.

    Fitted by least squares on a coarse copy, starting from the darker 60% of the pixels
    (ink is the bright minority); each pass then keeps the pixels within 2.5 robust standard
    deviations above the surface, so the fit follows the paper under a side light or
    vignetting, not the strokes.
    """
    h, w = ink.shape
    step = max(1, max(h, w) // 64)
    small = ink[::step, ::step].astype(np.float64)
    ys, xs = np.mgrid[0 : small.shape[0], 0 : small.shape[1]]
    ys = ys / max(small.shape[0] - 1, 1) - 0.5
    xs = xs / max(small.shape[1] - 1, 1) - 0.5
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1).reshape(-1, 6)
    values = small.ravel()
    use = values <= np.percentile(values, 60)  # start from the paper: ink is the bright minority
    coef = np.zeros(6)
    for _ in range(iterations):
        if use.sum() < 12:
            break
        coef = np.linalg.lstsq(design[use], values[use], rcond=None)[0]
        resid = values - design @ coef
        spread = 1.4826 * float(np.median(np.abs(resid[use] - np.median(resid[use])))) + 1e-3
        use = resid < 2.5 * spread
    fy, fx = np.mgrid[0:h, 0:w].astype(np.float32)
    fy, fx = fy / max(h - 1, 1) - 0.5, fx / max(w - 1, 1) - 0.5
    surface = coef[0] + coef[1] * fx + coef[2] * fy + coef[3] * fx * fx + coef[4] * fx * fy + coef[5] * fy * fy
    return ink - surface.astype(np.float32)


def remove_background(ink: np.ndarray) -> np.ndarray:
    """Subtract the slowly varying background (uneven light, paper tone) from white-on-black ink.

    First a smooth light surface fitted to the paper is subtracted (side light, vignetting);
    then a grey opening with a structuring element half the image's shorter side removes
    every stroke narrower than that and keeps what is left of the background (a white
    top-hat transform). What remains is ink against zero.
    """
    flat = _flatten(ink) if min(ink.shape) > _TINY else ink  # a tiny crop has no light falling across it
    size = max(3, min(ink.shape) // 2)
    return np.clip(flat - ndimage.grey_opening(flat, size=(size, size), mode="nearest"), 0.0, None)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The grey level that best separates ``values`` into two classes (Otsu's method)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist).astype(np.float64)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * centres)
    mean_low = np.divide(mass_low, weight_low, out=np.zeros_like(mass_low), where=weight_low > 0)
    mean_high = np.divide(mass_low[-1] - mass_low, weight_high, out=np.zeros_like(mass_low), where=weight_high > 0)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def clean_ink(ink: np.ndarray, speck_fraction: float = SPECK_FRACTION) -> np.ndarray:
    """Background-free ink -> [0, 1] strokes on exact black, or all zeros when there is no ink.

    A 3x3 median removes salt-and-pepper noise on pictures large enough to afford it. Pixels
    are then kept by hysteresis: a blob of pixels above half the Otsu threshold survives if it
    reaches the threshold itself and is not a speck (area below ``speck_fraction`` of the
    largest blob's). Grey levels are kept: the typical stroke level maps to 1, the low
    threshold to 0, so anti-aliased edges stay soft as in MNIST.
    """
    if min(ink.shape) >= 64:
        ink = ndimage.median_filter(ink, size=3, mode="nearest")
    peak = float(ink.max())
    empty = np.zeros(ink.shape, np.float32)
    # Noise level of the background: ink must clear it by a wide margin. Measured on the darker
    # half alone, since a small scan filled by its digit (16x16 postal digits) can be half ink.
    back = ink[ink <= np.median(ink)]
    noise = 1.4826 * float(np.median(np.abs(back - np.median(back)))) / _HALF_MAD
    if peak < max(MIN_CONTRAST, _NOISE_MARGIN * noise):
        return empty
    candidates = ink[ink > 0.02 * peak]
    high = max(otsu_threshold(candidates) if candidates.size else 0.0, MIN_CONTRAST / 2, 0.5 * _NOISE_MARGIN * noise)
    low = max(high / 2, 0.25 * _NOISE_MARGIN * noise)
    kept = _keep_strokes(ink, high, low, speck_fraction)
    return empty if kept is None else kept


def _keep_strokes(ink: np.ndarray, high: float, low: float, part: float, tall: float = 0.0) -> np.ndarray | None:
    """Hysteresis: the blobs above ``low`` that reach ``high``, span ``tall`` of the height and have
    ``part`` of the largest such blob's area, levelled to [0, 1] (stroke level 1); None if none is
    of ``_MIN_BLOB_PIXELS``."""
    labels, count = ndimage.label(ink > low, structure=np.ones((3, 3)))
    if count == 0:
        return None
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(np.ones_like(ink), labels, index)
    strong = ndimage.maximum(ink, labels, index) > high
    if tall:
        strong &= np.array([sl[0].stop - sl[0].start >= tall * ink.shape[0] for sl in ndimage.find_objects(labels)])
    if not strong.any():
        return None
    largest = float(areas[strong].max())
    if largest < _MIN_BLOB_PIXELS:
        return None
    keep = np.concatenate([[False], strong & (areas >= part * largest)])
    level = float(np.median(ink[keep[labels] & (ink > high)]))
    out = np.clip((ink - low) / max(level - low, 1e-6), 0.0, 1.0)
    return np.where(keep[labels], out, 0.0).astype(np.float32)


@dataclass(frozen=True)
class InkMap:
    """A cleaned picture: bright ink on exact black, at working resolution."""

    ink: np.ndarray  # (H, W) float32 in [0, 1]; 0 = no ink
    # Input pixels per working pixel (1.0 unless the picture was shrunk), counting a big JPEG's
    # reduced-size decoding too, so that boxes scaled by it are in the input file's pixels.
    scale: float
    shape: tuple[int, int]  # (height, width) of the input after EXIF orientation, pixels


def ink_map(source: ImageSource, speck_fraction: float = SPECK_FRACTION) -> InkMap:
    """Run the pipeline up to the cleaned ink (no cropping): shared by digits and numbers."""
    gray, decoded_scale, (width, height) = decode_gray(source)
    ink, scale = _clean(gray, speck_fraction)
    return InkMap(ink=ink, scale=scale * decoded_scale, shape=(height, width))


def _clean(gray: np.ndarray, speck_fraction: float = SPECK_FRACTION) -> tuple[np.ndarray, float]:
    work, scale = limit_size(gray)
    return clean_ink(remove_background(to_white_on_black(work)), speck_fraction), scale


def crop_to_ink(gray: np.ndarray, threshold: float = _INK_THRESHOLD) -> np.ndarray:
    """Crop to the bounding box of pixels brighter than ``threshold``.

    Raises :class:`ImageError` when nothing is bright enough to be ink.
    """
    rows = np.flatnonzero((gray > threshold).any(axis=1))
    cols = np.flatnonzero((gray > threshold).any(axis=0))
    if rows.size == 0:
        raise NoDigitError("no digit found (the image has no ink)")
    return gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_in_box(gray: np.ndarray, box: int = BOX_SIZE) -> np.ndarray:
    """Resize so that the longer side is ``box`` pixels, keeping the aspect ratio."""
    h, w = gray.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    # Box filtering averages when shrinking (anti-aliasing, like MNIST's own downscaling);
    # bicubic keeps strokes smooth when a tiny drawing is enlarged.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    out = np.asarray(img.resize((new_w, new_h), resample), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def center_by_mass(gray: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Paste into a ``size`` x ``size`` black frame so the centre of mass lands in the middle."""
    h, w = gray.shape
    total = float(gray.sum())
    ys, xs = np.mgrid[0:h, 0:w]
    cy = float((ys * gray).sum() / total) if total > 0 else (h - 1) / 2
    cx = float((xs * gray).sum() / total) if total > 0 else (w - 1) / 2
    top = int(round((size - 1) / 2 - cy))
    left = int(round((size - 1) / 2 - cx))
    # Keep the whole glyph inside the frame even if its mass is far off-centre.
    top = min(max(top, 0), size - h)
    left = min(max(left, 0), size - w)
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = gray
    return out


def is_mnist_like(gray: np.ndarray) -> bool:
    """True for a 28x28 image that is already white ink on a black background."""
    return gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and float(np.median(_border(gray))) < 0.1


def _array_to_gray(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageError(f"expected a grey (H, W) or colour (H, W, 3|4) array, got {a.shape}")
    if a.size == 0:
        raise ImageError("image is empty")
    if a.shape[0] * a.shape[1] > decode.MAX_PIXELS:  # the decoder's limit, read when called: one pixel policy
        raise ImageError(f"image is too large ({a.shape[1]}x{a.shape[0]} pixels)")
    if a.dtype.kind not in "biuf":
        raise ImageError(f"unsupported array dtype {a.dtype} (use uint8, uint16 or float in [0, 1])")
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype.kind in "iu" and a.dtype.itemsize > 1:
        # Wider integers (np.asarray of a 16-bit PIL image gives int32) say nothing of their
        # range either: infer it as for 16/32-bit files, so 0..65535 data is not saturated.
        a = a.astype(np.float32) / _value_range(a)
    elif a.dtype.kind in "iu":
        a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 127.0)
    else:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageError("image contains NaN or infinite values")
        a = a / 255.0 if a.max() > 1.0 else a
    a = np.clip(a, 0.0, 1.0)
    if a.ndim == 3:
        # The same ITU-R 601 luma weights Pillow uses for files, so arrays and files agree.
        grey = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if a.shape[-1] == 4:  # composite on white, as for RGBA files
            grey = grey * a[..., 3] + (1.0 - a[..., 3])
        a = grey
    return a


def decode_gray(source: ImageSource) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Grey (H, W) float32 [0, 1] pixels of any image source, input pixels per pixel, and the input's (width, height).

    The scale is 1.0 except for a large JPEG decoded at reduced size (:func:`decode_image`).
    """
    if isinstance(source, np.ndarray):
        gray = _array_to_gray(source)
        return gray, 1.0, (gray.shape[1], gray.shape[0])
    decoded = decode_image(source)
    return to_grayscale(decoded.image), decoded.scale, decoded.size


def load_gray(source: ImageSource) -> np.ndarray:
    """Any supported image source -> a grey (H, W) float32 picture in [0, 1] (as decoded; see :func:`decode_gray`)."""
    return decode_gray(source)[0]


def glyph_to_mnist(glyph: np.ndarray) -> np.ndarray:
    """Cleaned ink of one digit (white on black, any size) -> the 28x28 model input."""
    return center_by_mass(fit_in_box(crop_to_ink(glyph, threshold=0.0)))


def to_mnist(source: ImageSource) -> np.ndarray:
    """Turn any image into a (28, 28) float32 array in [0, 1], white digit on black.

    Accepts a path, bytes, a binary file object, a PIL image or a NumPy array (uint8 0..255,
    uint16, or float in [0, 1]; grey (H, W) or colour (H, W, 3|4)). An image that is already
    MNIST-like (28x28, white on black) passes through unchanged. Raises :class:`NoDigitError`
    when the image holds no ink.
    """
    gray = load_gray(source)
    if is_mnist_like(gray):
        crop_to_ink(gray)  # raises on a blank canvas: no digit, no guess
        return gray.astype(np.float32)
    try:
        return glyph_to_mnist(_clean(gray)[0])
    except NoDigitError:
        # A crop of one digit on textured or tinted paper (a digit cut from a cheque or a form)
        # often defeats the global cleaning; the paper is then removed locally, as the grey
        # line reader does. Only for crops: on a whole page this would find ink in any texture.
        if max(gray.shape) > GREY_CROP_MAX:
            raise
        return glyph_to_mnist(grey_digit_ink(gray))


def grey_digit_ink(gray: np.ndarray) -> np.ndarray:
    """The ink of one digit in a small grey crop ((H, W) [0, 1]), paper removed locally: bright strokes on black.

    The crop is scaled to the grey reader's line height, its paper tone removed with a grey
    opening (:func:`digitrec.data.ink.remove_paper`) and its ink stretched, then its strokes kept by
    hysteresis as :func:`clean_ink` keeps them. Raises :class:`NoDigitError` when no stroke
    stands out.
    """
    h, w = gray.shape
    scale = GREY_HEIGHT / h
    size = (max(1, round(w * scale)), GREY_HEIGHT)
    bright = 1.0 - gray if ink_is_dark(gray) else gray
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(Image.fromarray(bright.astype(np.float32), mode="F").resize(size, resample)), 0, 1)
    raw = remove_paper(small)
    level = ink_level(raw)
    if level < GREY_MIN_INK:  # faint: paper pattern, not a pen (real pen strokes are darker)
        raise NoDigitError("no digit found: the image has no ink")
    flat = np.clip(raw / level, 0.0, 1.0)
    # Paper texture survives flattening (a guilloche is made of strokes too), so no noise test:
    # the ink is the brighter mode (Otsu). The digit is a stroke as tall as a digit (pattern
    # breaks into short pieces; an underline is flat) and what is nearly as large (a "5"'s flag).
    high = otsu_threshold(flat[flat > 0.02])
    kept = _keep_strokes(flat, high, high / 2, GREY_PART, GREY_TALL) if high > 0.0 else None
    if kept is None:
        raise NoDigitError("no digit found: the image has no ink")
    return kept
