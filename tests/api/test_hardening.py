"""Issue 15 API findings, each reproduced: spoofed X-Forwarded-For, a superscript digit in an id, a JWT whose
`sid` is not the user's, bad bearer credentials at full speed, missing security headers, a refresh cookie that
is not Secure behind a TLS proxy, and server-wide counters shown to owners."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from fleet.api.app import create_app
from fleet.api.security_headers import API_CSP, ui_csp, url_origin
from fleet.auth import tokens
from fleet.config import Settings
from fleet.db import Database
from fleet.passwords import hash_password
from fleet.runtime import Runtime

from .conftest import PASSWORD, Account, LiveServer, make_account, make_fleet, serve_api


@contextlib.asynccontextmanager
async def pass_through_proxy(target_port: int) -> AsyncIterator[int]:
    """A TCP relay on 127.0.0.1 (like `socat` or an SSH tunnel): every client arrives from a local address."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_forwarded_for_from_an_untrusted_local_proxy_does_not_bypass_the_login_limit(
    api_settings: Settings, db: Database
) -> None:
    settings = api_settings.model_copy(
        update={"rate_limit_login_per_minute": 5, "rate_limit_key_prefix": f"t-{uuid.uuid4().hex}"}
    )
    assert settings.trusted_proxies == []  # the default
    account = await make_account(db, settings, password_hash=await hash_password(PASSWORD))
    async with (
        serve_api(settings, db) as server,
        pass_through_proxy(server.port) as proxy_port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy_port}") as client,
    ):
        codes = []
        for attempt in range(8):  # each attempt claims another client address
            response = await client.post(
                "/auth/login",
                json={"email": account.email, "password": "wrong password!"},
                headers={"X-Forwarded-For": f"198.51.100.{attempt + 1}"},
            )
            codes.append(response.status_code)
    assert codes == [401] * 5 + [429] * 3


async def test_a_superscript_digit_in_an_id_is_not_found_and_keeps_the_connection(
    live_api: LiveServer, admin: Account
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live_api.port)
    try:
        for path, expected in (
            ("/api/v2/devices/%C2%B2/telemetry", 404),  # "²".isdigit() is True, int("²") fails
            ("/api/devices/%D9%A1%D9%A2/last", 404),  # Arabic-Indic digits
            ("/vehicles/%C2%B2", 422),
            ("/vehicles/1_0", 422),  # int() would read 10
            ("/vehicles/+5", 422),
            ("/admin/users/%EF%BC%91/approve", 422),  # a full-width 1
            ("/api/audit?actor=%C2%B2", 200),
            ("/health", 200),  # the same connection still answers
        ):
            method = "POST" if path.endswith("/approve") else "GET"
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: fleet\r\nAuthorization: Bearer {admin.token}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            status, headers, _ = await read_response(reader)
            assert (path, status) == (path, expected)
            assert headers.get("connection") != "close"
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_a_token_whose_session_is_not_the_users_is_refused(
    http: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    alice = await make_account(db, api_settings)
    bob = await make_account(db, api_settings)
    assert api_settings.secret_key is not None
    secret = api_settings.secret_key.get_secret_value()
    for session_id in (tokens.new_session_id(), bob.session_id):  # made up; another user's
        forged, _ = tokens.issue_access_token(
            secret, user_id=alice.id, role="owner", token_version=0, session_id=session_id, ttl_sec=60
        )
        answer = await http.get("/vehicles", headers={"Authorization": f"Bearer {forged}"})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "token_revoked"
    assert (await http.get("/vehicles", headers=alice.headers)).status_code == 200


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_failed_bearer_authentication_is_rate_limited_per_address(
    api_settings: Settings, db: Database, admin: Account, backend: str
) -> None:
    redis_url = os.environ.get("REDIS_URL") if backend == "redis" else None
    if backend == "redis" and not redis_url:
        pytest.skip("REDIS_URL is not set")
    settings = api_settings.model_copy(
        update={
            "rate_limit_auth_failures_per_minute": 3,
            "rate_limit_key_prefix": f"t-{uuid.uuid4().hex}",
            "redis_url": redis_url,
        }
    )
    assert settings.secret_key is not None
    expired, _ = tokens.issue_access_token(
        settings.secret_key.get_secret_value(),
        user_id=admin.id,
        role="superuser",
        token_version=0,
        session_id=admin.session_id,
        ttl_sec=60,
        now=1_000_000,
    )
    async with serve_api(settings, db) as server, httpx.AsyncClient(base_url=server.url) as client:
        # An expired token was genuine: not counted.
        for _ in range(5):
            answer = await client.get("/vehicles", headers={"Authorization": f"Bearer {expired}"})
            assert answer.json()["error"]["code"] == "token_expired"
        guesses = [
            await client.get("/vehicles", headers={"Authorization": f"Bearer {credential}"})
            for credential in ("not-a-token", "flt_0123456789ab_guess", "eyJ.forged.jwt", "one-more")
        ]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429]
        assert guesses[-1].json()["error"]["code"] == "rate_limited"
        assert 1 <= int(guesses[-1].headers["retry-after"]) <= 60
        # Refused before any lookup while the window lasts, whatever is sent.
        assert (await client.get("/vehicles", headers=admin.headers)).status_code == 429
        metrics = (await client.get("/metrics")).text
    assert 'fleet_auth_failures_total{kind="api_key"}' in metrics
    assert 'fleet_auth_failures_total{kind="token"}' in metrics


async def test_security_headers_on_data_auth_errors_docs_and_ui(
    http: httpx.AsyncClient, admin: Account
) -> None:
    for response in (
        await http.get("/vehicles", headers=admin.headers),
        await http.get("/vehicles"),  # 401
        await http.post("/auth/login", json={"email": "x@example.com", "password": "nope"}),
        await http.get("/api/v2/stats", headers=admin.headers),
    ):
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == API_CSP
    docs = await http.get("/docs")
    assert "script-src 'self';" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    asset = await http.get("/docs/assets/swagger-ui.css")
    assert asset.status_code == 200 and asset.headers["cache-control"].startswith("public")
    assert asset.headers["x-content-type-options"] == "nosniff"
    ui = await http.get("/ui/")
    assert "tile.openstreetmap.org" in ui.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in ui.headers["content-security-policy"]


def test_ui_policy_follows_the_tile_and_grafana_settings(api_settings: Settings) -> None:
    default = ui_csp(api_settings)
    assert default == (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob: https://tile.openstreetmap.org; "
        "connect-src 'self' ws: wss: https://tile.openstreetmap.org; worker-src 'self' blob:; "
        "frame-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )
    custom = ui_csp(
        api_settings.model_copy(
            update={
                "map_tile_url": "https://{s}.tiles.example.net:8443/osm/{z}/{x}/{y}.png",
                "grafana_url": "https://grafana.example.net/d/fleet?orgId=1",
            }
        )
    )
    assert "img-src 'self' data: blob: https://*.tiles.example.net:8443;" in custom
    assert "frame-src https://grafana.example.net;" in custom
    local = ui_csp(
        api_settings.model_copy(update={"map_tile_url": "/tiles/{z}/{x}/{y}.png", "grafana_url": "/grafana/"})
    )
    assert "img-src 'self' data: blob:;" in local and "frame-src 'self';" in local
    assert url_origin("javascript:alert(1)") is None and url_origin(None) is None


@pytest.mark.parametrize(
    ("trusted", "forwarded_proto", "secure"),
    [([], "https", False), (["127.0.0.1"], "https", True), (["127.0.0.1"], "http", False), ([], None, False)],
)
async def test_refresh_cookie_is_secure_behind_a_trusted_tls_proxy(
    api_settings: Settings, db: Database, trusted: list[str], forwarded_proto: str | None, secure: bool
) -> None:
    settings = api_settings.model_copy(update={"trusted_proxies": trusted, "public_url": None})
    account = await make_account(db, settings, password_hash=await hash_password(PASSWORD))
    app = create_app(settings, runtime=Runtime(settings=settings, db=db, roles=["api"]))
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
            login = await client.post(
                "/auth/login", json={"email": account.email, "password": PASSWORD}, headers=headers
            )
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"].lower()
    assert ("; secure" in cookie) is secure


async def test_owners_see_their_own_counters_only(
    api_settings: Settings, db: Database, admin: Account
) -> None:
    owner = await make_account(db, api_settings)
    await make_fleet(db, owner)
    runtime = Runtime(settings=api_settings, db=db, roles=["api"])
    runtime.extras["ingest_stats"] = lambda: {"connections": 1234, "frames_total": 99}  # server-wide
    app = create_app(api_settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
            mine = (await client.get("/api/v2/stats", headers=owner.headers)).json()
            everything = (await client.get("/api/v2/stats", headers=admin.headers)).json()
    assert mine["vehicles"] == 1 and mine["devices"] == 1
    assert mine.get("ingest") is None
    assert everything["ingest"] == {"connections": 1234, "frames_total": 99}
    assert everything["vehicles"] >= mine["vehicles"]
