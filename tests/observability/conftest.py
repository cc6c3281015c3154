"""Fixtures of the observability tests: ASGI apps on Unix sockets, a stand-in upstream, and users."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

REPO = Path(__file__).resolve().parents[2]


class SocketServer:
    """uvicorn serving an ASGI app on a Unix socket inside the test's event loop (no TCP port at all)."""

    def __init__(self, app: Any, path: Path, lifespan: str = "on") -> None:
        self.path = path
        config = uvicorn.Config(
            app, uds=str(path), log_config=None, access_log=False, ws="none", lifespan=lifespan
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> SocketServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task
                raise AssertionError("socket server did not start")
            await asyncio.sleep(0.02)
        os.chmod(self.path, 0o777)  # nginx workers may run as another user
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The stand-in for Grafana: answers every request with the path and headers it received, as JSON."""
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    query = scope.get("query_string", b"").decode()
    body = json.dumps({"path": scope["path"], "query": query, "headers": headers}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short path (Unix socket paths are limited to ~100 bytes) that other users may traverse.
    path = Path(tempfile.mkdtemp(prefix="fleet-obs-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def create_user(
    conn: asyncpg.Connection, email: str, password_hash: str, role: str = "owner", status: str = "active"
) -> int:
    user_id: int = await conn.fetchval(
        "INSERT INTO users (email, password_hash, role, status) VALUES ($1, $2, $3, $4) RETURNING id",
        email,
        password_hash,
        role,
        status,
    )
    return user_id


@pytest.fixture
async def echo_server(socket_dir: Path) -> AsyncIterator[SocketServer]:
    server = await SocketServer(echo_app, socket_dir / "grafana.sock", lifespan="off").start()
    try:
        yield server
    finally:
        await server.stop()
