"""Rate limits: the 6th sign-in in a minute from one address is refused (in-process and with Redis),
addresses come from the socket or, behind a trusted proxy only, from X-Forwarded-For."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from fleet.api.deps import resolve_client_address
from fleet.api.state import ApiState, parse_networks
from fleet.config import Settings
from fleet.db import Database
from fleet.ops.ratelimit import RateLimiter
from fleet.passwords import hash_password

from .conftest import PASSWORD, LiveServer, make_account, serve_api, unique_email


def limited_settings(api_settings: Settings, redis_url: str | None) -> Settings:
    return api_settings.model_copy(
        update={
            "rate_limit_login_per_minute": 5,
            "rate_limit_register_per_hour": 2,
            "rate_limit_api_per_minute": 8,
            "redis_url": redis_url,
            "rate_limit_key_prefix": f"fleet-test-{uuid.uuid4().hex}",
            "smtp_url": None,
            "trusted_proxies": ["127.0.0.1"],
        }
    )


@pytest.fixture(params=["memory", "redis"])
async def limited_api(
    request: pytest.FixtureRequest, api_settings: Settings, db: Database
) -> AsyncIterator[tuple[LiveServer, Settings]]:
    redis_url = None
    if request.param == "redis":
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            pytest.skip("REDIS_URL is not set")
    settings = limited_settings(api_settings, redis_url)
    async with serve_api(settings, db) as server:
        yield server, settings


async def test_sixth_login_in_a_minute_is_refused(
    limited_api: tuple[LiveServer, Settings], db: Database
) -> None:
    server, settings = limited_api
    account = await make_account(db, settings, password_hash=await hash_password(PASSWORD))
    async with httpx.AsyncClient(base_url=server.url) as client:
        codes = []
        for attempt in range(6):
            password = PASSWORD if attempt == 0 else "wrong password!"
            response = await client.post("/auth/login", json={"email": account.email, "password": password})
            codes.append(response.status_code)
        assert codes == [200, 401, 401, 401, 401, 429]
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # The right password does not help either while the window lasts.
        blocked = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
        assert blocked.status_code == 429
        # Behind the trusted proxy (127.0.0.1), each real client has its own budget.
        via_proxy = await client.post(
            "/auth/login",
            json={"email": account.email, "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.23"},
        )
        assert via_proxy.status_code == 200
    async with db.system() as conn:
        failures = await conn.fetch(
            """SELECT host(client_addr) AS addr FROM admin_audit_log
               WHERE action = 'auth.login_failed' AND actor_email = $1""",
            account.email,
        )
    assert [row["addr"] for row in failures] == ["127.0.0.1"] * 4


async def test_register_and_api_limits(limited_api: tuple[LiveServer, Settings], db: Database) -> None:
    server, settings = limited_api
    account = await make_account(db, settings)
    async with httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": "203.0.113.77"}) as client:
        statuses = [
            (
                await client.post("/auth/register", json={"email": unique_email("rl"), "password": PASSWORD})
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [202, 202, 429]
        api = [(await client.get("/vehicles", headers=account.headers)).status_code for _ in range(9)]
        assert api == [200] * 8 + [429]


def test_client_address_resolution() -> None:
    state = ApiState.__new__(ApiState)
    state.trusted_proxies = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    # An untrusted peer cannot choose its address with the header.
    assert resolve_client_address("198.51.100.1", "1.2.3.4", state) == "198.51.100.1"
    # A trusted proxy's header is read right to left, skipping further trusted hops.
    assert resolve_client_address("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.1.2.3", state) == "203.0.113.9"
    assert resolve_client_address("127.0.0.1", None, state) == "127.0.0.1"
    assert resolve_client_address("127.0.0.1", "garbage", state) == "127.0.0.1"
    assert resolve_client_address("10.0.0.5", "10.0.0.6", state) == "10.0.0.6"


async def test_limiter_backends_from_settings(api_settings: Settings) -> None:
    memory = RateLimiter.from_settings(api_settings.model_copy(update={"redis_url": None}))
    assert memory.backend == "memory"
    redis = RateLimiter.from_settings(api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    assert redis.backend == "redis"
    # Redis unreachable: the limiter lets requests through rather than locking everyone out.
    decision = await redis.hit("login", "192.0.2.1")
    assert decision.allowed
    await redis.close()
