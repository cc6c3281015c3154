"""Slow-loris on the API port (issue 15): request heads and bodies have deadlines, idle connections close, and
the API keeps answering while slow clients hang on."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from fleet.config import Settings
from fleet.db import Database

from .conftest import LiveServer, serve_api

DEADLINE = 0.5
# How long a test waits for the server to act on a 0.5 s deadline; generous for a loaded 2-core machine.
PATIENCE = 10.0


def strict_api(api_settings: Settings, db: Database) -> contextlib.AbstractAsyncContextManager[LiveServer]:
    settings = api_settings.model_copy(
        update={
            "api_request_head_timeout_sec": DEADLINE,
            "api_request_body_timeout_sec": DEADLINE,
            "api_keepalive_timeout_sec": DEADLINE,
        }
    )
    return serve_api(settings, db)


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    while chunk := await asyncio.wait_for(reader.read(4096), PATIENCE):
        received += chunk
    return received, time.monotonic() - started


async def test_a_request_head_sent_byte_by_byte_is_cut_off(api_settings: Settings, db: Database) -> None:
    async with strict_api(api_settings, db) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: fleet\r\n")

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(100):  # one header line every 0.1 s, never the blank line
                    writer.write(f"X-Slow-{i}: 1\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.1)

        sender = asyncio.create_task(dribble())
        answer, waited = await until_closed(reader)
        sender.cancel()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b'"request_timeout"' in answer
        assert waited < PATIENCE
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
        assert 'fleet_http_timeouts_total{phase="head"}' in metrics


async def test_silent_and_idle_connections_are_closed(api_settings: Settings, db: Database) -> None:
    async with strict_api(api_settings, db) as server:
        # Connected, nothing sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer, _ = await until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        # One request answered, then idle on keep-alive: closed without a word.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: fleet\r\n\r\n")
        answer, _ = await until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


async def test_a_body_that_never_completes_is_cut_off(api_settings: Settings, db: Database) -> None:
    async with strict_api(api_settings, db) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nHost: fleet\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n" + b'{"email": "x@example.com", '
        )
        answer, waited = await until_closed(reader)
        writer.close()
        assert waited < PATIENCE
        assert b"200 OK" not in answer


async def test_the_api_answers_while_slow_clients_hang_on(api_settings: Settings, db: Database) -> None:
    async with strict_api(api_settings, db) as server:
        slow = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(50)]
        for _, writer in slow:
            writer.write(b"GET /health HTTP/1.1\r\nHost: fleet\r\nX-Partial: ")
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(5):
                assert (await client.get("/health")).status_code == 200
        closed = await asyncio.gather(*(until_closed(reader) for reader, _ in slow))
        for _, writer in slow:
            writer.close()
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer, _ in closed)
