"""Fixtures of the live-view tests: a real API on a socket with WebSockets enabled, an ingest service on the
same bus (PostgreSQL LISTEN/NOTIFY, or Redis with REDIS_URL), accounts and vehicles of our own, and a small
WebSocket client (the `websockets` library) that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect

from fleet.api.app import create_app
from fleet.api.server import server_config
from fleet.config import Settings
from fleet.db import Database
from fleet.ingest import IngestService
from fleet.live.hub import LiveHub
from fleet.ops.bus import ensure_bus
from fleet.runtime import Runtime
from tests.api.conftest import Account, LiveServer, make_account

AGENT_KEY = "live-agent-key-0123456789abcdef"


class LiveWsServer(LiveServer):
    """The test API server with WebSockets on (the shared `live_api` fixture serves HTTP only)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(app)
        # Exactly as `fleet serve` configures the API, WebSockets included.
        self.server = uvicorn.Server(
            server_config(app, settings, host="127.0.0.1", port=self.port, lifespan="on")
        )

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


@pytest.fixture(scope="session")
def live_settings(test_settings: Settings) -> Settings:
    """Short intervals so that transitions happen within a test's patience (the defaults are in docs)."""
    return test_settings.model_copy(
        update={
            "rate_limit_api_per_minute": 100_000,
            "rate_limit_key_prefix": "fleet-live-test",
            "live_poll_interval_sec": 0.3,
            "live_status_sweep_sec": 0.5,
            "live_access_refresh_sec": 0.5,
            "live_queue_max": 50,
            "live_auth_timeout_sec": 1.0,
            "pull_timeout_sec": 1.0,
            "vehicle_default_api_key": SecretStr(AGENT_KEY),
            "server_host": "127.0.0.1",
            "ingest_bind_ephemeral": True,  # every protocol's listener on a free port
            "ingest_batch_window_ms": 5,
        }
    )


@pytest.fixture(scope="session")
async def live_runtime(live_settings: Settings, db: Database) -> AsyncIterator[Runtime]:
    """One runtime shared by the API and an ingest service, on one bus, like `fleet serve`."""
    runtime = Runtime(settings=live_settings, db=db, roles=["ingest", "api"])
    bus, _ = await ensure_bus(runtime)
    service = IngestService(live_settings, db, bus)
    await service.start()
    runtime.extras["ingest"] = service
    try:
        yield runtime
    finally:
        await service.stop(5)
        await runtime.cancel_tasks()
        await bus.close()


@pytest.fixture(scope="session")
async def live_server(live_runtime: Runtime, live_settings: Settings) -> AsyncIterator[LiveWsServer]:
    server = LiveWsServer(create_app(live_settings, runtime=live_runtime), live_settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def hub(live_server: LiveWsServer) -> LiveHub:
    app = live_server.server.config.app
    live: LiveHub = app.state.api.live
    return live


@pytest.fixture
def ingest_port(live_runtime: Runtime) -> int:
    service: IngestService = live_runtime.extras["ingest"]
    return service.ports["navtelecom"]


@pytest.fixture
async def owner(db: Database, live_settings: Settings) -> Account:
    return await make_account(db, live_settings, role="owner")


@pytest.fixture
async def other_owner(db: Database, live_settings: Settings) -> Account:
    return await make_account(db, live_settings, role="owner")


@pytest.fixture
async def admin_account(db: Database, live_settings: Settings) -> Account:
    return await make_account(db, live_settings, role="superuser")


class Client:
    """A WebSocket client that collects every message in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Condition()
        self.closed: tuple[int | None, str | None] | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                async with self.arrived:
                    self.messages.append(json.loads(raw))
                    self.arrived.notify_all()
        except Exception:
            pass
        finally:
            async with self.arrived:
                self.closed = (self.ws.close_code, self.ws.close_reason)
                self.arrived.notify_all()

    async def wait_for(self, predicate: Any, within: float = 10.0, since: int = 0) -> dict[str, Any]:
        """The first message (from the `since`-th on, received or to come) for which `predicate` holds."""
        checked = since
        async with asyncio.timeout(within):
            async with self.arrived:
                while True:
                    for message in self.messages[checked:]:
                        if predicate(message):
                            return message
                    checked = len(self.messages)
                    if self.closed is not None:
                        raise AssertionError(f"closed {self.closed} before the message came: {self.messages}")
                    await self.arrived.wait()

    async def wait_closed(self, within: float = 10.0) -> tuple[int | None, str | None]:
        async with asyncio.timeout(within):
            async with self.arrived:
                while self.closed is None:
                    await self.arrived.wait()
                return self.closed

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def ws_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    ws = await connect(url, open_timeout=10, **kwargs)
    client = Client(ws)
    try:
        yield client
    finally:
        await client.close()
