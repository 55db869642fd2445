"""The FastAPI application: ``create_app(config)`` builds it, ``run(config)`` serves it with uvicorn."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from digitrec import __version__
from digitrec.errors import ConfigError
from digitrec.infer.recogniser import Recogniser, load
from digitrec.serve.config import ServeConfig, resolve_parallelism, usable_cores
from digitrec.serve.engine import InferenceThread
from digitrec.serve.graph import GraphCache
from digitrec.serve.inputs import prepare
from digitrec.serve.limits import ApiError, BodyLimitMiddleware, TimeoutMiddleware
from digitrec.serve.metrics import MULTIPROC_ENV, Metrics, MetricsMiddleware
from digitrec.serve.routers import info, page, predict
from digitrec.serve.service import Service

__all__ = ["create_app", "app_from_env", "run", "check_address", "CONFIG_ENV"]

CONFIG_ENV = "DIGITREC_SERVE_CONFIG"  # how `run` hands the config to worker processes
_log = logging.getLogger("digitrec.serve")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error": "..."}``; unexpected ones are logged and answered 500."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error(422, f"invalid {where}: {first.get('msg', 'invalid value')}")

    async def disconnected(request: Request, exc: Exception) -> Response:
        # The client went away mid-upload; nobody reads this answer, but metrics count it (nginx's 499).
        return Response(status_code=499)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, unexpected)


def create_app(config: ServeConfig | None = None, *, recogniser: Recogniser | None = None) -> FastAPI:
    """Build the app for ``config``, loading its model unless a ``recogniser`` is given.

    The inference thread starts with the app (or on the first request) and stops when it shuts down.
    """
    config = config or ServeConfig()
    rec = recogniser if recogniser is not None else load(
        config.model, device=config.device, precision=config.precision, backend=config.backend,
        verifier=config.verifier, line_reader=config.line_reader)
    metrics = Metrics()
    engine = InferenceThread(
        rec, prepare,
        max_batch=config.max_batch, on_batch=metrics.observe_batch,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        # Move everything loaded so far (torch, the model, the web stack) out of the collector's
        # sight: full collections then scan only per-request garbage. Measured with
        # bench/load.py at 32 connections: p99 118 ms -> 24 ms, the tail was collector pauses.
        gc.collect()
        gc.freeze()
        yield
        engine.stop()
        metrics.close()

    app = FastAPI(
        title="digitrec",
        version=__version__,
        description="Handwritten-digit recognition. Send an image, get the digit and ten probabilities.",
        docs_url=None,  # served by routers.page from local files instead of a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = Service(config=config, recogniser=rec, engine=engine, metrics=metrics,
                                graph=GraphCache(rec))
    _install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(info.router)
    app.include_router(page.router)
    page.mount_static(app)
    # add_middleware wraps from the inside out: the last added sees requests first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(TimeoutMiddleware, seconds=config.timeout_s)
    if config.cors_origin is not None:
        app.add_middleware(
            CORSMiddleware, allow_origins=[config.cors_origin], allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=lambda: app.routes)
    return app


def _set_threads(config: ServeConfig) -> None:
    import torch

    torch.set_num_threads(config.torch_threads)


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: the config comes from ``$DIGITREC_SERVE_CONFIG``."""
    # run() hands over a resolved config; resolving again covers a factory started by hand.
    config = resolve_parallelism(ServeConfig.from_json(os.environ[CONFIG_ENV]), usable_cores())
    _set_threads(config)
    return create_app(config)


def check_address(host: str, port: int) -> None:
    """Fail early, in one line, when the address cannot be listened on (in use, not local...)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@contextmanager
def _shared_metrics_dir() -> Iterator[str]:
    """A fresh directory named in ``$PROMETHEUS_MULTIPROC_DIR`` while the workers run, then removed.

    Fresh, because files left by an earlier server would be added to this one's counts.
    """
    before = os.environ.get(MULTIPROC_ENV)
    directory = tempfile.mkdtemp(prefix="digitrec-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # workers are spawned with this environment
    try:
        yield directory
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(directory, ignore_errors=True)


def run(config: ServeConfig) -> None:
    """Serve until interrupted. The address and the model are checked before serving starts.

    ``workers=0`` starts one worker per usable core, ``torch_threads=0`` gives each worker its
    share of the cores (:func:`~digitrec.serve.config.resolve_parallelism`). With more than one
    worker ``/metrics`` adds up all of them (prometheus_client's multiprocess mode).
    """
    import uvicorn

    config = resolve_parallelism(config, usable_cores())
    check_address(config.host, config.port)
    _set_threads(config)
    common = {
        "host": config.host, "port": config.port, "log_level": config.log_level,
        "access_log": config.access_log, "timeout_keep_alive": 5, "server_header": False,
    }
    if config.workers == 1:
        uvicorn.run(create_app(config), **common)  # type: ignore[arg-type]
        return
    # Fail here, once, on a bad model (or a missing backend) rather than in every worker.
    load(config.model, device=config.device, precision=config.precision, backend=config.backend,
         verifier=config.verifier, line_reader=config.line_reader)
    with _shared_metrics_dir():
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("digitrec.serve.app:app_from_env", factory=True, workers=config.workers, **common)  # type: ignore[arg-type]
