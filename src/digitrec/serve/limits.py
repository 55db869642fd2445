"""Request limits as ASGI middleware: body size (413) and a whole-request deadline (408/503).

Both are plain ASGI wrappers rather than Starlette's ``BaseHTTPMiddleware``, which would buffer
and copy every request; these only watch the messages go by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiError", "BodyLimitMiddleware", "TimeoutMiddleware", "send_error"]


class ApiError(Exception):
    """A client error answered as ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def send_error(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer an ASGI request with a JSON error directly (for middleware outside the router)."""
    body = json.dumps({"error": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


def _limit_text(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MiB" if limit >= 1024 * 1024 else f"{limit:,} bytes"


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body exceeds the {_limit_text(self.max_bytes)} limit"
        for name, value in scope["headers"]:
            # The server (h11/httptools) has already rejected malformed lengths.
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, 413, too_big)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                # Chunked uploads carry no length up front: stop reading once past the limit.
                if received > self.max_bytes:
                    raise ApiError(413, too_big)
            return message

        await self.app(scope, limited_receive, send)


class TimeoutMiddleware:
    """Gives every request ``seconds`` in all; then 408 if the client was still sending, else 503."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # A request without a body (most GETs) has nothing left to send from the start.
        body_done = b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") == b"0"
        started = False

        async def watched_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with anyio.move_on_after(self.seconds) as scope_:
            await self.app(scope, watched_receive, watched_send)
        if not scope_.cancelled_caught:
            return
        if started:
            # Part of the response is out; the server closes the connection mid-response.
            raise TimeoutError(f"response not finished within {self.seconds:g} s")
        if body_done:
            await send_error(send, 503, f"the server did not answer within {self.seconds:g} s; try again",
                             [(b"retry-after", b"1")])
        else:
            await send_error(send, 408, f"request body not received within {self.seconds:g} s")
