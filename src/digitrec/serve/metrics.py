"""Prometheus metrics of the service: requests by route and status, latency, inference time.

With one process each app keeps its numbers in its own registry, so several apps in one process
(tests) do not collide. With ``--workers N`` each worker writes its numbers to files in one
directory shared by all workers (prometheus_client's multiprocess mode: ``run`` makes the
directory and names it in ``$PROMETHEUS_MULTIPROC_DIR`` before the workers start), and a scrape,
whichever worker answers it, adds up every worker's files: one ``/metrics`` for the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST", "MULTIPROC_ENV"]

# prometheus_client reads it when imported: set, every metric value lives in a file there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; the interesting range for a ~1 ms model is sub-millisecond to the request timeout.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The collectors of one app and its registry.

    Only counters and histograms, which multiprocess mode adds up across workers as they are; a
    gauge would need a ``multiprocess_mode`` saying how to combine the workers' values.
    """

    def __init__(self) -> None:
        # Set, prometheus_client (which read the variable at import) writes every value to a
        # file there, so that is where a scrape must read them.
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digitrec_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "digitrec_http_request_duration_seconds", "Time from request to the end of the response",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.inference = Histogram(
            "digitrec_inference_seconds", "Time of one forward pass (a micro-batch of images)",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "digitrec_inference_batch_images", "Images per forward pass", buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("digitrec_images_predicted", "Images run through the model", registry=self.registry)

    def observe_batch(self, images: int, seconds: float) -> None:
        """Record one forward pass (called from the inference thread; the client is thread-safe)."""
        self.inference.observe(seconds)
        self.batch_size.observe(images)
        self.images.inc(images)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of all workers in multiprocess mode)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # A fresh registry per scrape: the collector reads the workers' files as they are now.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)

    def close(self) -> None:
        """The worker stops: drop its live-gauge files (none today), keep its counts in the sums."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], Sequence[BaseRoute]] = tuple) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # gives the app's routes, to name requests the router did not label

    def _route_label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return str(route.path)
        # Mounts leave no route in the scope: match them here. Requests refused before routing
        # (404, a Content-Length over the limit) count as "other".
        for candidate in self.routes():
            match, _ = candidate.matches({"type": "http", "path": scope["path"], "method": scope["method"],
                                          "root_path": scope.get("root_path", "")})
            path = getattr(candidate, "path", None)
            if match is Match.FULL and path:
                return str(path)
        # One shared label: raw paths would let clients grow the label set without bound.
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "other"
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            self.metrics.requests.labels(method, self._route_label(scope), str(status)).inc()

        async def send_wrapper(message: Message) -> None:
            # Counted before the response goes out, not after: a client that reads its answer and
            # then scrapes (another worker, maybe) must find its request already in the total.
            if message["type"] == "http.response.start" and not counted:
                count(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not counted:  # the app raised before answering: the server error handler sends a 500
                count(500)
            label = self._route_label(scope)
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - start)
