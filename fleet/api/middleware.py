"""ASGI middleware of the API: oversized bodies refused before parsing, request ids in every log line."""

from __future__ import annotations

import json
import time
import uuid

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The API takes small JSON documents only (sign-in, registration, assignments).
MAX_BODY_BYTES = 64 * 1024


class _TooLarge(StarletteHTTPException):
    """Raised from `receive`: FastAPI passes HTTP exceptions through body parsing to the error handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.code = "payload_too_large"


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "payload_too_large", "message": f"request body larger than {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a Content-Length above the limit; chunked bodies are counted as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await _send_413(send, self.max_bytes)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(send, self.max_bytes)


class DeprecationHeaders:
    """Add `Deprecation`/`Sunset`/`Link` headers to every answer under a deprecated prefix, errors included."""

    def __init__(self, app: ASGIApp, prefix: str, headers: dict[str, str]) -> None:
        self.app = app
        self.prefix = prefix
        self.raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.raw]}
            await send(message)

        await self.app(scope, receive, with_headers)


REQUEST_ID_HEADER = b"x-request-id"
# An incoming id is reused (so a proxy's id follows the request through our logs) only when it is sane.
_MAX_REQUEST_ID = 64
SLOW_REQUEST_SEC = 0.5


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if 0 < len(text) <= _MAX_REQUEST_ID and all(c.isalnum() or c in "-_.:" for c in text):
                return text
    return None


class RequestContext:
    """Bind a request id into every log line of the request, echo it back, log failed or slow requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("fleet.api.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            elif message["type"] == "websocket.close":
                status = message.get("code", 1000)  # the close code of a WebSocket the server ends
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                path = scope.get("path", "")
                elapsed = time.perf_counter() - started
                # nginx in front keeps the full access log; the API logs what needs a look: failures,
                # slow answers, and everything at DEBUG. The path never carries the query (WebSocket
                # clients may send `?token=`). A WebSocket is logged when it ends, with the server's close code.
                if scope["type"] == "websocket":
                    level = "info" if status not in (0, 1000, 1001) else "debug"
                else:
                    level = "info" if status >= 400 or elapsed >= SLOW_REQUEST_SEC else "debug"
                getattr(self.log, level)(
                    "request",
                    method=scope.get("method", "WS"),
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
