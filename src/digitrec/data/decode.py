"""Decoding untrusted images safely: a format allow-list, a pixel limit, big JPEGs read smaller, EXIF orientation.

The first step of every pipeline (CLI, Python API, server): nothing else opens image files.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from digitrec.errors import ImageError, first_line

__all__ = ["MAX_PIXELS", "IMAGE_FORMATS", "DecodedImage", "decode_image", "open_image", "image_size"]

MAX_PIXELS = 40_000_000  # refuse larger decoded images (decompression bombs), pixels
# The only file formats decoded (Pillow format names). Naming them stops Pillow from trying
# every plugin it has on untrusted bytes: PostScript/EPS would run Ghostscript, and rarely used
# decoders are where the bugs live. These cover photos, scans, screenshots and drawings.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
# JPEG can decode straight to 1/2, 1/4 or 1/8 of its size (DCT scaling), at a fraction of the
# time and memory, so a phone photo over MAX_PIXELS is read smaller rather than refused: the
# analysis shrinks it to WORK_SIZE anyway. Other formats have no such shortcut.
_DRAFT_REDUCTIONS = (2, 4, 8)

@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture and how its pixels relate to the input's."""

    image: Image.Image  # fully decoded, EXIF orientation applied, first frame
    scale: float  # input pixels per decoded pixel: 2, 4 or 8 for a big JPEG read smaller, else 1.0
    size: tuple[int, int]  # (width, height) of the input after EXIF orientation, pixels


def _allowed() -> str:
    return ", ".join(IMAGE_FORMATS)


def _open_file(source: str | os.PathLike | bytes | BinaryIO) -> tuple[Image.Image, str]:
    """Open (header only, nothing decoded) an image file in one of :data:`IMAGE_FORMATS`."""
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        if not name:
            raise ImageError("empty image path")
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        fp: Any = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name, fp = "<bytes>", io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        name, fp = "<file>", source
    else:
        raise ImageError(f"unsupported image input of type {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # Pillow warns before it raises on bombs; we check the size ourselves afterwards.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=list(IMAGE_FORMATS)), name
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a recognised image format (allowed: {_allowed()})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large") from exc
    except MemoryError:
        raise
    # Format plugins raise many types on hostile headers (struct.error, IndexError, ...), and a
    # file opened in text mode gives TypeError: all of them mean "not a usable image".
    except Exception as exc:
        raise ImageError(f"{name}: cannot read ({type(exc).__name__}: {first_line(exc)})") from exc


def image_size(source: str | os.PathLike | bytes | BinaryIO) -> tuple[int, int]:
    """(width, height) from the image's header, before anything is decoded.

    Raises :class:`ImageError` as :func:`open_image` does for files it cannot open (the pixel
    limit is not checked here: :func:`open_image` applies it, and may read a JPEG smaller).
    """
    img, _ = _open_file(source)
    try:
        return img.size
    finally:
        img.close()


def _draft(img: Image.Image, name: str) -> float:
    """Set a JPEG over :data:`MAX_PIXELS` to decode at the least reduction that fits; the factor."""
    width, height = img.size
    is_jpeg = img.format in ("JPEG", "MPO")  # MPO: a phone JPEG with extra frames, same decoder
    too_large = ImageError(
        f"{name}: image is too large ({width}x{height} pixels; limit {MAX_PIXELS:,}"
        + (", even at 1/8 scale)" if is_jpeg else "; only JPEG is read at a reduced size)")
    )
    if not is_jpeg:
        raise too_large
    for reduction in _DRAFT_REDUCTIONS:
        if -(-width // reduction) * -(-height // reduction) <= MAX_PIXELS:
            break
    else:
        raise too_large
    # draft() takes the largest reduction that keeps at least the requested size; ask for the
    # size this reduction gives and read back the one it chose (None: it could not draft).
    drafted = img.draft(img.mode, (width // reduction, height // reduction))
    if drafted is None or img.width * img.height > MAX_PIXELS:
        raise too_large
    return width / drafted[1][2]  # drafted box: (0, 0, width / reduction, height / reduction)


def decode_image(source: str | os.PathLike | bytes | BinaryIO | Image.Image) -> DecodedImage:
    """Open and fully decode an image, applying EXIF orientation and taking the first frame.

    Only :data:`IMAGE_FORMATS` are decoded (an already-decoded PIL image is taken as is).
    Nothing is decoded before the header's size is checked: an image over :data:`MAX_PIXELS`
    is refused, except a JPEG file, which is decoded at the least of 1/2, 1/4 or 1/8 scale
    that fits (``scale`` says which; Pillow's own guard, twice ``Image.MAX_IMAGE_PIXELS`` or
    about 179 MP by default, still refuses bigger files first). A PIL image is never read
    smaller: the caller's image is left as it was given. Raises :class:`ImageError` for
    missing, unreadable, disallowed, truncated or oversized images.
    """
    frame = 0
    if isinstance(source, Image.Image):
        img = source
        name = "<image>"
        frame = source.tell()  # restored below: the caller's image is left as it was given
        # A PIL image still holding its file's data (tile) would be decoded by its own plugin.
        if getattr(img, "tile", None) and img.format not in IMAGE_FORMATS + ("MPO",):
            raise ImageError(f"{name}: {img.format} images are not decoded (allowed: {_allowed()})")
    else:
        img, name = _open_file(source)
    try:
        width, height = img.size
        if width == 0 or height == 0:
            raise ImageError(f"{name}: image is empty")
        img.seek(0)  # animated GIF/WebP/TIFF: the first frame (before draft, which it would undo)
        scale = 1.0
        if width * height > MAX_PIXELS:
            if img is source:
                raise ImageError(f"{name}: image is too large ({width}x{height} pixels; limit {MAX_PIXELS:,})")
            scale = _draft(img, name)
        img.load()
        out = ImageOps.exif_transpose(img)  # a copy, detached from the file we close below
    except (ImageError, MemoryError):
        raise
    # A decoder failing mid-file raises OSError, ValueError, SyntaxError, struct.error, ...
    except Exception as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({first_line(exc)})") from exc
    finally:
        if img is not source:
            img.close()
        else:
            img.seek(frame)
    # EXIF orientation may have turned the picture a quarter: the input's size turns with it.
    turned = out.size != img.size
    return DecodedImage(image=out, scale=scale, size=(height, width) if turned else (width, height))


def open_image(source: str | os.PathLike | bytes | BinaryIO | Image.Image) -> Image.Image:
    """The decoded image of :func:`decode_image` (a big JPEG comes back smaller: see there)."""
    return decode_image(source).image
