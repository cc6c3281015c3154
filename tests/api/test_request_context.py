"""Every answer carries a request id, and the request's log lines carry the same id."""

from __future__ import annotations

import logging

import httpx
import pytest
import structlog

from fleet.api.middleware import RequestContext


async def test_request_id_is_generated_and_echoed(http: httpx.AsyncClient) -> None:
    first = await http.get("/health")
    second = await http.get("/health")
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_sane_incoming_request_id_is_kept_and_junk_replaced(http: httpx.AsyncClient) -> None:
    kept = await http.get("/health", headers={"X-Request-ID": "proxy-42.a:b"})
    assert kept.headers["x-request-id"] == "proxy-42.a:b"
    junk = await http.get("/health", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 80})
    assert junk.headers["x-request-id"] != "bad id\twith spaces"
    assert len(junk.headers["x-request-id"]) == 32


async def test_log_lines_inside_a_request_carry_its_id(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        seen.append(structlog.contextvars.get_contextvars().get("request_id"))
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    transport = httpx.ASGITransport(app=RequestContext(app))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.INFO, logger="fleet.api.access"):
            response = await client.get("/vehicles", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 204
    assert seen == ["req-1"]
    assert structlog.contextvars.get_contextvars().get("request_id") is None  # unbound afterwards
