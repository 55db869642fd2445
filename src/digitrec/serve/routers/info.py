"""GET /healthz, /v1/model and /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from digitrec import __version__
from digitrec.models.header import parameter_count
from digitrec.serve.metrics import CONTENT_TYPE_LATEST
from digitrec.serve.schemas import HealthOut, ModelOut
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
        # The file name only: a server path says nothing to a client and something to an attacker.
        "verifier": rec.verifier.path.stem if rec.verifier is not None and rec.verifier.path else None,
        "line_reader": rec.line_reader.path.stem if rec.line_reader is not None and rec.line_reader.path else None,
    }


@router.get("/v1/model", response_model=ModelOut, summary="The served model")
async def model(service: Annotated[Service, Depends(get_service)]) -> dict[str, Any]:
    return model_info(service)


@router.get(
    "/metrics", summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    response_class=Response,
)
async def metrics(service: Annotated[Service, Depends(get_service)]) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
