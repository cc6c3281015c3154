"""A programmable stand-in for a vehicle's Outbound API, served by uvicorn on 127.0.0.1.

`FakeVehicle` answers like a well-behaved agent by default — a few channels, one sample per channel every
`step_s` seconds of whatever window is asked for, paging by `limit` without splitting a timestamp — and any
path can be overridden with a handler that returns status, body and headers (or streams a body), to play a
slow, huge, malformed or lying vehicle. It records every request and the most requests it saw at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from fleet.sync.parse import format_time, parse_time

Reply = tuple[int, bytes | AsyncIterator[bytes], dict[str, str]]
Handler = Callable[[dict[str, str]], Awaitable[Reply]]

DEFAULT_CHANNELS = [
    {"channel_id": 1, "name": "speed", "unit": "km/h", "phys_min": 0, "phys_max": 140},
    {"channel_id": 2, "name": "engine_rpm", "unit": "rpm", "phys_min": 0, "phys_max": 3000},
    {"channel_id": 3, "name": "fuel_level", "unit": "%", "phys_min": 0.0, "phys_max": 100.0},
]


@dataclass(slots=True)
class Request:
    path: str
    query: dict[str, str]


def json_reply(doc: Any, status: int = 200) -> Reply:
    body = json.dumps(doc).encode()
    return status, body, {"content-type": "application/json", "content-length": str(len(body))}


@dataclass
class FakeVehicle:
    """An ASGI app playing one vehicle."""

    api_key: str = "fake-vehicle-key-0123456789"
    channels: list[dict[str, Any]] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CHANNELS])
    step_s: float = 10.0
    alarms: list[dict[str, Any]] = field(default_factory=list)
    software_version: str = "9.9.9"
    # Merged into the /status answer (contract_version, db_ok, oldest_data, limits, ...).
    status_extra: dict[str, Any] = field(default_factory=dict)
    # The agent's clock horizon: a window end is clamped to it (None: answer every window whole).
    horizon: datetime | None = None
    overrides: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def windows(self, path: str = "/data") -> list[tuple[datetime, datetime]]:
        """The windows asked for on `path`, in order."""
        found = []
        for request in self.requests:
            if request.path == path:
                start, end = parse_time(request.query["from"]), parse_time(request.query["to"])
                assert start is not None and end is not None
                found.append((start, end))
        return found

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        query = dict(parse_qsl(scope["query_string"].decode()))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Request(path, query))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if headers.get("x-api-key") != self.api_key:
                reply = json_reply({"error": {"code": "unauthorized", "message": "wrong X-API-Key"}}, 401)
            elif path in self.overrides:
                reply = await self.overrides[path](query)
            else:
                reply = self.answer(path, query)
        finally:
            self.in_flight -= 1
        status, body, extra = reply
        response_headers = [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        if isinstance(body, bytes):
            await send({"type": "http.response.body", "body": body})
            return
        with contextlib.suppress(OSError, RuntimeError):
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    # --- the well-behaved answers --------------------------------------------------------------------------
    def answer(self, path: str, query: dict[str, str]) -> Reply:
        if path == "/status":
            return json_reply(
                {
                    "online": True,
                    "software_version": self.software_version,
                    "contract_version": "1.0",
                    "db_ok": True,
                    "time": format_time(datetime.now(UTC)),
                    **self.status_extra,
                }
            )
        if path == "/channels":
            return json_reply({"channels": self.channels})
        if path == "/data":
            return json_reply(self.data_page(query))
        if path == "/alarms":
            start, end = self._window(query)
            return json_reply(
                {
                    "from": format_time(start),
                    "to": format_time(end),
                    "alarms": self.alarms,
                    "truncated": False,
                }
            )
        return json_reply({"error": {"code": "not_found", "message": path}}, 404)

    def _window(self, query: dict[str, str]) -> tuple[datetime, datetime]:
        start, end = parse_time(query["from"]), parse_time(query["to"])
        assert start is not None and end is not None
        if self.horizon is not None:
            end = max(start, min(end, self.horizon))
        return start, end

    def sample_times(self, start: datetime, end: datetime) -> list[datetime]:
        """Sample times in [start, end): multiples of `step_s` since the epoch."""
        step = self.step_s
        first = math.ceil(start.timestamp() / step) * step
        times = []
        t = first
        while t < end.timestamp():
            times.append(datetime.fromtimestamp(t, UTC))
            t += step
        return times

    def data_page(self, query: dict[str, str]) -> dict[str, Any]:
        start, end = self._window(query)
        limit = int(query.get("limit", "50000"))
        ids = [c["channel_id"] for c in self.channels]
        rows: list[dict[str, Any]] = []
        next_from = None
        for when in self.sample_times(start, end):
            if len(rows) + len(ids) > limit:
                next_from = when
                break
            rows.extend({"channel_id": c, "time": format_time(when), "value": float(c)} for c in ids)
        return {
            "from": format_time(start),
            "to": format_time(end),
            "rows": rows,
            "count": len(rows),
            "truncated": next_from is not None,
            "next_from": format_time(next_from) if next_from is not None else None,
        }


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _ByPort:
    """One ASGI app in front of many: the request's local port says which vehicle it is for."""

    def __init__(self, apps: dict[int, Any]) -> None:
        self.apps = apps

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.apps[scope["server"][1]](scope, receive, send)


def _listen() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every keep-alive response waits 40 ms for a delayed ACK (Nagle's algorithm).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_many(apps: list[Any]) -> AsyncIterator[list[int]]:
    """Serve each app on its own port of 127.0.0.1, all from one uvicorn server; yields the ports."""
    sockets = [_listen() for _ in apps]
    ports = [sock.getsockname()[1] for sock in sockets]
    server = _Server(
        uvicorn.Config(
            _ByPort(dict(zip(ports, apps, strict=True))),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield ports
    finally:
        server.should_exit = True
        server.force_exit = True
        await task
        for sock in sockets:
            sock.close()


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 on a free port for the duration of the block; yields the port."""
    async with serve_many([app]) as ports:
        yield ports[0]


class FakeClock:
    """An injectable `now`: starts at `start`, moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.value = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.value

    def advance(self, seconds: float) -> datetime:
        self.value += timedelta(seconds=seconds)
        return self.value
