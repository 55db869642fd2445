"""What the routes share: the config, the loaded model, the inference thread and the metrics."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from digitrec.infer.recogniser import Recogniser
from digitrec.serve.config import ServeConfig
from digitrec.serve.engine import InferenceThread
from digitrec.serve.graph import GraphCache
from digitrec.serve.metrics import Metrics

__all__ = ["Service", "get_service"]


@dataclass
class Service:
    """One app's long-lived state (kept on ``app.state.service``)."""

    config: ServeConfig
    recogniser: Recogniser
    engine: InferenceThread
    metrics: Metrics
    graph: GraphCache  # the model's ONNX graph for in-browser inference (GET /v1/model.onnx)


async def get_service(request: Request) -> Service:
    """FastAPI dependency: the app's :class:`Service`.

    A coroutine on purpose: FastAPI runs plain-function dependencies in its threadpool, which
    would add a thread hop to every request (it showed in profiles under load).
    """
    return request.app.state.service  # type: ignore[no-any-return]
