"""uvicorn's HTTP/1.1 protocol (httptools) with deadlines for slow clients.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for *reading* a
request: a client that sends its headers one byte every few seconds (slow-loris) holds a connection, a
descriptor and a little memory for as long as it likes, and a few thousand of them exhaust the process. Here a
request's line and headers must arrive within `API_REQUEST_HEAD_TIMEOUT_SEC` of its first byte (or of the
connection, for the first request), and its body within `API_REQUEST_BODY_TIMEOUT_SEC` of the headers. A
late head gets `408` and the connection is closed; a late body closes the connection (the handler sees the
client disconnect). Both are logged and counted in `fleet_http_timeouts_total{phase}`.

The hooks are httptools' parser callbacks, which uvicorn's protocol implements: `on_message_begin`,
`on_headers_complete`, `on_message_complete`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

HTTP_TIMEOUTS = Counter(
    "fleet_http_timeouts_total", "HTTP connections closed because a request arrived too slowly", ["phase"]
)
_BODY_408 = json.dumps(
    {"error": {"code": "request_timeout", "message": "the request did not arrive in time"}}
).encode()
_RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY_408)}\r\n".encode()
    + b"connection: close\r\n\r\n"
    + _BODY_408
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection: uvicorn's protocol plus a deadline while a request head or body is being read."""

    head_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    # --- deadlines ---------------------------------------------------------------------------------------
    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        HTTP_TIMEOUTS.labels(phase).inc()
        peer = self.client[0] if self.client else None
        log.info("http_request_too_slow", phase=phase, peer=peer)
        if phase == "head" and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_RESPONSE_408)
        self.transport.close()

    # --- connection and parser callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout, "head")  # the first request is due from the start

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the first byte of a later request on a keep-alive connection
            self._arm(self.head_timeout, "head")

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout, "body")  # cancelled at once by on_message_complete when bodiless
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes the transport over, with its own timeouts
        super().handle_websocket_upgrade()


def guarded_protocol(head_timeout: float, body_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these deadlines."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"head_timeout": head_timeout, "body_timeout": body_timeout},
    )
