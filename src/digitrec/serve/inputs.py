"""Turning request bodies into images: raw image bytes, multipart uploads or JSON pixel arrays.

Everything here checks before it spends: the content type first (415), then the decoded size
from the image header before decoding (422), so a small file cannot unpack into a huge bitmap.
Images are decoded by :func:`digitrec.data.preprocess.open_image`, the CLI's and the Python API's
decoder: the same formats, the same pixel limit (``MAX_PIXELS``) and the same reduced-size
reading of big JPEG photos, so that any picture the command line reads, the server reads too.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from digitrec.data import decode
from digitrec.data.preprocess import IMAGE_SIZE, NoDigitError, image_size, to_mnist
from digitrec.errors import ImageError, first_line
from digitrec.serve.limits import ApiError

__all__ = [
    "IMAGE_TYPES",
    "PixelsBody",
    "media_type",
    "read_image_source",
    "read_upload_files",
    "prepare",
    "pixel_count",
    "SMALL_IMAGE_PIXELS",
    "error_message",
    "describe_pixels_schema",
]

# Raw-body types for preprocess.IMAGE_FORMATS, the only formats decoded (PNM, say, is not); the
# bytes are sniffed anyway, the type only has to be plausible.
IMAGE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/gif", "image/bmp", "image/x-bmp",
    "image/x-ms-bmp", "image/webp", "image/tiff", "application/octet-stream",
})
_BYTES_NAME = "<bytes>: "  # how preprocess names an image given as bytes, at the start of its errors
JSON_TYPE = "application/json"
_INLINE_JSON_BYTES = 16 * 1024  # a 28x28 pixel array is ~3-10 kB; bigger bodies are parsed off the loop
MULTIPART_TYPE = "multipart/form-data"

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]


class PixelsBody(BaseModel):
    """A grey image as rows of pixel values: 0-255, or 0-1 when no value exceeds 1."""

    model_config = ConfigDict(extra="forbid")

    pixels: list[list[Pixel]] = Field(
        description="rows of grey levels (any size; 28x28 MNIST-style, white on black, is used as is)",
        min_length=1,
    )


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower-case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _pixels_to_array(body: bytes) -> np.ndarray:
    try:
        parsed = PixelsBody.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise ApiError(422, f"invalid JSON body at {where}: {err.get('msg', 'invalid')}") from None
    rows = parsed.pixels
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise ApiError(422, "pixels must be a non-empty rectangle: every row the same, non-zero length")
    limit = decode.MAX_PIXELS  # read when called: the library's limit, whatever it is then
    if width * len(rows) > limit:
        raise ApiError(422, f"image is too large ({width}x{len(rows)} pixels; limit {limit:,})")
    return np.asarray(rows, dtype=np.float32)  # (H, W)


async def read_image_source(request: Request) -> bytes | np.ndarray:
    """The one image in a request: raw image bytes, multipart field ``file``, or JSON ``pixels``."""
    kind = media_type(request)
    if kind == JSON_TYPE:
        body = await request.body()
        if len(body) <= _INLINE_JSON_BYTES:
            return _pixels_to_array(body)
        # Parsing megabytes of JSON takes a while: not on the event loop.
        return await run_in_threadpool(_pixels_to_array, body)
    if kind == MULTIPART_TYPE:
        files = await read_upload_files(request, "file", max_files=1)
        return files[0][1]
    if kind in IMAGE_TYPES:
        data = await request.body()
        if not data:
            raise ApiError(422, "the request body is empty; send the image bytes")
        return data
    if not kind:
        raise ApiError(415, "missing Content-Type; send an image type (image/png, ...), multipart/form-data "
                       "or application/json")
    raise ApiError(415, f"unsupported Content-Type {kind!r}; send an image type (image/png, ...), "
                   "multipart/form-data or application/json")


async def read_upload_files(request: Request, field: str, *, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every upload in multipart ``field``; 422 if there is none."""
    if media_type(request) != MULTIPART_TYPE:
        raise ApiError(415, f"send the images as multipart/form-data field {field!r}")
    # Starlette answers malformed bodies and more than max_files files with a 400.
    async with request.form(max_files=max_files, max_fields=max_files) as form:
        uploads = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(422, f"no file in multipart field {field!r}")
        out = []
        for up in uploads:
            data = await up.read()
            if not data:
                raise ApiError(422, f"file {up.filename or '(unnamed)'!r} is empty")
            out.append((up.filename or "", data))
    return out


# Images up to this many pixels are decoded on the inference thread (a 280x280 canvas is 78,400);
# bigger ones in the threadpool, so one large photo does not hold up everyone's inference.
SMALL_IMAGE_PIXELS = 512 * 512


def pixel_count(source: bytes | np.ndarray) -> int:
    """How many pixels a request image has, from its header alone; :class:`ImageError` if unreadable."""
    return source.size if isinstance(source, np.ndarray) else math.prod(image_size(source))


def prepare(source: bytes | np.ndarray) -> np.ndarray:
    """The model's (28, 28) input for one request image; :class:`ImageError` if unusable.

    Decoded as :func:`digitrec.data.preprocess.to_mnist` decodes files. An image without ink
    gives an all-black frame where the library answers it "no digit".
    """
    try:
        return to_mnist(source)
    except NoDigitError:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    except ImageError:
        raise
    # preprocess turns every decoder failure into an ImageError; this is a last guard, so
    # that no picture, however odd, gets a 500 from the server.
    except Exception as exc:
        raise ImageError(f"cannot decode the image ({first_line(exc)})") from exc


def error_message(exc: ImageError) -> str:
    """The one-line answer for an unusable request image, without the library's "<bytes>: "."""
    return first_line(exc).removeprefix(_BYTES_NAME)


def describe_pixels_schema() -> dict[str, Any]:
    """The JSON schema of the pixels body, for the OpenAPI document."""
    return PixelsBody.model_json_schema()
