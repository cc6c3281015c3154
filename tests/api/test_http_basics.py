"""Cross-cutting HTTP behaviour: error shape, 413, docs, metrics access, redirects, readiness with Redis."""

from __future__ import annotations

import httpx
import pytest

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.runtime import Runtime

from .conftest import Account, LiveServer, free_port


async def test_one_error_shape(http: httpx.AsyncClient, admin: Account) -> None:
    for response in (
        await http.get("/no/such/path"),
        await http.delete("/vehicles"),
        await http.get("/vehicles/abc", headers=admin.headers),
        await http.get("/vehicles/99999999999", headers=admin.headers),
        await http.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"}),
        await http.post("/auth/register", json={"email": "not-an-email", "password": "x"}),
    ):
        assert 400 <= response.status_code < 500
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert "Traceback" not in response.text


async def test_oversized_bodies_are_refused_before_parsing(http: httpx.AsyncClient) -> None:
    huge = b'{"email": "' + b"a" * 70_000 + b'"}'
    response = await http.post("/auth/login", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"x" * 8192

    streamed = await http.post("/auth/login", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_docs_and_openapi(http: httpx.AsyncClient) -> None:
    assert (await http.get("/docs")).status_code == 200
    assert (await http.get("/redoc")).status_code == 200
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in (
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/google",
        "/auth/google/callback",
        "/vehicles",
        "/vehicles/{vehicle_id}/status",
        "/vehicles/{vehicle_id}/alarms",
        "/vehicles/{vehicle_id}/positions",
        "/vehicles/{vehicle_id}/measurements",
        "/admin/users/pending",
        "/admin/users/{user_id}/approve",
        "/admin/users/{user_id}/reject",
        "/admin/users/{user_id}/block",
        "/admin/vehicles/{vehicle_id}/assign",
        "/api/audit",
        "/api/v1/health",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}/telemetry",
        "/api/v1/devices/{device_id}/raw-frames",
        "/api/v2/health",
        "/api/v2/stats",
        "/api/v2/devices",
        "/api/v2/devices/{device_id}/telemetry",
        "/api/v2/devices/{device_id}/can-data",
        "/api/v2/devices/{device_id}/raw-frames",
        "/api/v2/raw-frames",
        "/api/devices",
        "/api/devices/{imei}/last",
        "/api/devices/{imei}/can",
        "/health",
        "/ready",
        "/metrics",
        "/auth/api-keys",
        "/auth/api-keys/{key_id}",
    ):
        assert path in spec["paths"], path
    vehicles = spec["paths"]["/vehicles"]["get"]
    assert vehicles["security"] == [{"bearer": []}]
    assert "VehiclePage" in vehicles["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert spec["paths"]["/api/v1/devices"]["get"]["deprecated"] is True
    login_body = spec["components"]["schemas"]["LoginRequest"]
    assert login_body["examples"]


async def test_root_redirects_to_ui(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 307 and response.headers["location"] == "/ui/"


async def test_metrics_access(live_api: LiveServer, db: Database, api_settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        local = await client.get("/metrics")
        assert local.status_code == 200 and "fleet_http_requests_total" in local.text
        assert (
            'route="/vehicles/{vehicle_id}"' in local.text
            or "fleet_http_request_duration_seconds" in local.text
        )
        # TRUSTED_PROXIES is empty by default: a header from the local peer changes nothing.
        spoofed = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
        assert spoofed.status_code == 200

    behind_nginx = api_settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    app = create_app(behind_nginx, runtime=Runtime(settings=behind_nginx, db=db, roles=["api"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
            # Through the trusted local proxy for a remote client: refused; for a local one: served.
            remote = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
            assert remote.status_code == 403
            assert (await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})).status_code == 200

    settings = api_settings.model_copy(update={"metrics_api_key": None})
    from pydantic import SecretStr

    keyed = api_settings.model_copy(update={"metrics_api_key": SecretStr("scrape-key-0123456789")})
    public = api_settings.model_copy(update={"metrics_allow_public": True})
    for config, headers, expected in (
        (settings, {}, 403),
        (keyed, {"X-API-Key": "scrape-key-0123456789"}, 200),
        (keyed, {"X-API-Key": "wrong"}, 403),
        (keyed, {"Authorization": "Bearer scrape-key-0123456789"}, 200),  # Prometheus' `authorization`
        (keyed, {"Authorization": "Bearer wrong"}, 403),
        (keyed, {"Authorization": "Basic scrape-key-0123456789"}, 403),
        (public, {}, 200),
    ):
        app = create_app(config, runtime=Runtime(settings=config, db=db, roles=["api"]))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
                assert (await client.get("/metrics", headers=headers)).status_code == expected


@pytest.mark.parametrize("reachable", [False, True])
async def test_ready_checks_redis_when_configured(
    reachable: bool, db: Database, api_settings: Settings
) -> None:
    import os

    url = os.environ.get("REDIS_URL") if reachable else f"redis://127.0.0.1:{free_port()}/0"
    if not url:
        pytest.skip("REDIS_URL is not set")
    settings = api_settings.model_copy(update={"redis_url": url, "smtp_url": None})
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    app = create_app(settings, runtime=runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet") as client,
    ):
        response = await client.get("/ready")
    assert response.status_code == (200 if reachable else 503)
    assert response.json()["checks"]["redis"] == ("ok" if reachable else "down")
