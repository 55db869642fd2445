"""GET /healthz, /v1/model, /v1/model.onnx and /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from digitrec import __version__
from digitrec.models.header import parameter_count
from digitrec.serve.limits import ApiError
from digitrec.serve.metrics import CONTENT_TYPE_LATEST
from digitrec.serve.schemas import ErrorOut, HealthOut, ModelOut
from digitrec.serve.service import Service, get_service

__all__ = ["router", "model_info"]

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
async def healthz() -> dict[str, str]:
    # Answering at all is the signal: the event loop runs (inference starts on demand).
    return {"status": "ok"}


def model_info(service: Service) -> dict[str, Any]:
    """Name, architecture, size and stored metrics of the served model."""
    rec = service.recogniser
    mf = rec.model_file
    return {
        "name": rec.name,
        "arch": mf.arch,
        # From the file's header when it answers from a cached graph (no weights loaded).
        "parameters": sum(p.numel() for p in mf.model.parameters()) if mf.model is not None
        else parameter_count(mf.path),
        "metrics": dict(rec.metadata.get("metrics", {})),
        "version": __version__,
        "device": str(rec.device),
        "precision": rec.precision,
        "class_names": list(mf.class_names),
        "min_confidence": rec.min_confidence,
        # The file name only: a server path says nothing to a client and something to an attacker.
        "verifier": rec.verifier.path.stem if rec.verifier is not None and rec.verifier.path else None,
        "line_reader": rec.line_reader.path.stem if rec.line_reader is not None and rec.line_reader.path else None,
    }


@router.get("/v1/model", response_model=ModelOut, summary="The served model")
async def model(service: Annotated[Service, Depends(get_service)]) -> dict[str, Any]:
    return model_info(service)


def _etag_matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak or strong) or is ``*``."""
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


@router.get(
    "/v1/model.onnx", summary="The served model's ONNX graph (the drawing page runs it in the browser)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
              "description": "input `images` (N, 28, 28) float32 in [0, 1], output `probabilities` (N, 10)"},
        304: {"description": "unchanged since the ETag given in If-None-Match"},
        404: {"model": ErrorOut, "description": "this model has no graph to share (another precision)"},
    },
)
async def model_graph(request: Request, service: Annotated[Service, Depends(get_service)]) -> Response:
    graphs = service.graph
    # The first request may export the graph with PyTorch (seconds): not on the event loop.
    found = graphs.get() if graphs.ready else await run_in_threadpool(graphs.get)
    if isinstance(found, str):
        raise ApiError(404, found)
    graph, etag = found
    # no-cache: the browser keeps the graph but asks each time, so a restarted server with
    # another model is never answered from a stale copy.
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    return Response(graph, media_type="application/octet-stream", headers=headers)


@router.get(
    "/metrics", summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    response_class=Response,
)
async def metrics(service: Annotated[Service, Depends(get_service)]) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
