"""POST /v1/predict, /v1/predict/batch and /v1/read."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from digitrec.errors import ImageError, ModelFileError
from digitrec.infer.recogniser import Prediction
from digitrec.serve.inputs import (
    SMALL_IMAGE_PIXELS,
    describe_pixels_schema,
    error_message,
    pixel_count,
    prepare,
    read_image_source,
    read_upload_files,
)
from digitrec.serve.limits import ApiError
from digitrec.serve.schemas import BatchOut, ErrorOut, PredictionOut, ReadOut
from digitrec.serve.service import Service, get_service

__all__ = ["router", "predict_one"]

router = APIRouter(prefix="/v1", tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "malformed multipart body"},
    413: {"model": ErrorOut, "description": "request body over the size limit"},
    415: {"model": ErrorOut, "description": "unsupported Content-Type"},
    422: {"model": ErrorOut, "description": "undecodable image, wrong JSON shape or too many pixels"},
}
_IMAGE_SCHEMA = {"type": "string", "format": "binary"}
_SINGLE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one image: the raw bytes with an image Content-Type, multipart field `file`, "
                       "or JSON `{\"pixels\": [[...], ...]}` (grey 0-255, or 0-1)",
        "content": {
            "image/png": {"schema": _IMAGE_SCHEMA},
            "image/jpeg": {"schema": _IMAGE_SCHEMA},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _IMAGE_SCHEMA}, "required": ["file"]}
            },
            "application/json": {"schema": describe_pixels_schema()},
        },
    }
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "images as repeated multipart field `files`",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"files": {"type": "array", "items": _IMAGE_SCHEMA}},
                           "required": ["files"]}
            }
        },
    }
}


async def predict_one(service: Service, source: bytes | np.ndarray) -> Prediction:
    """Prepare and predict one request image off the event loop; 422 if it is unusable.

    Small images are decoded on the inference thread itself (one thread hop per request);
    bigger ones (judged from the header) in the threadpool, so that they do not hold up
    everyone else's inference.
    """
    try:
        if pixel_count(source) <= SMALL_IMAGE_PIXELS:
            return await service.engine.predict_source(source)
        image = await run_in_threadpool(prepare, source)
    except ImageError as exc:
        raise ApiError(422, error_message(exc)) from None
    (pred,) = await service.engine.predict(image[None])
    return pred


@router.post(
    "/predict", response_model=PredictionOut, responses=_ERRORS, openapi_extra=_SINGLE_BODY,
    summary="Recognise the digit in one image",
)
async def predict(
    request: Request,
    service: Annotated[Service, Depends(get_service)],
    input: Annotated[bool, Query(description="also return the 28x28 image the model saw")] = False,
) -> JSONResponse:
    source = await read_image_source(request)
    pred = await predict_one(service, source)
    return JSONResponse(pred.to_dict(with_input=input))


def _prepare_each(sources: list[bytes]) -> list[np.ndarray | str]:
    """Each image prepared, or the one-line reason it cannot be."""
    out: list[np.ndarray | str] = []
    for source in sources:
        try:
            out.append(prepare(source))
        except ImageError as exc:
            out.append(error_message(exc))
    return out


@router.post(
    "/predict/batch", response_model=BatchOut, responses=_ERRORS, openapi_extra=_BATCH_BODY,
    summary="Recognise the digits in several images (one answer or error per image)",
)
async def predict_batch(request: Request, service: Annotated[Service, Depends(get_service)]) -> JSONResponse:
    files = await read_upload_files(request, "files", max_files=service.config.max_batch_files)
    results: list[dict[str, Any]] = [{"filename": name} for name, _ in files]
    prepared = await run_in_threadpool(_prepare_each, [data for _, data in files])
    good = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
    images = [p for p in prepared if not isinstance(p, str)]
    for i, p in enumerate(prepared):
        if isinstance(p, str):
            results[i]["error"] = p
    if images:
        preds = await service.engine.predict(np.stack(images))
        for i, pred in zip(good, preds):
            results[i].update(pred.to_dict())
    return JSONResponse({"predictions": results})


def _read_number(service: Service, source: bytes | np.ndarray) -> dict[str, Any]:
    rec: Any = service.recogniser
    # Bytes, not an opened image: the library then reads a big JPEG at a reduced size and
    # still gives the boxes in the uploaded picture's pixels.
    return rec.read(source).to_dict()  # type: ignore[no-any-return]


@router.post(
    "/read", response_model=ReadOut, responses=_ERRORS, openapi_extra=_SINGLE_BODY,
    summary="Read a line of handwritten digits as a number, with per-digit results and boxes",
)
async def read_number(request: Request, service: Annotated[Service, Depends(get_service)]) -> JSONResponse:
    source = await read_image_source(request)
    try:
        return JSONResponse(await run_in_threadpool(_read_number, service, source))
    except ImageError as exc:
        raise ApiError(422, error_message(exc)) from None
    except ModelFileError:  # the served model's classes are not digits
        raise ApiError(409, "the served model was not trained on digits; it cannot read numbers") from None
