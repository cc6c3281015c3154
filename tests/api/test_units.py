"""Unit tests of the pieces under the API: token formats and cache, rate-limit storage, bucket parsing."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from fleet.api.errors import ApiError
from fleet.api.params import parse_bucket
from fleet.auth import tokens
from fleet.config import Settings
from fleet.db import Database
from fleet.ops.ratelimit import RateLimiter, ThrottledMemoryStorage
from fleet.passwords import BCRYPT_COST, hash_password_sync

SECRET = "unit-test-secret-" + "x" * 20


def test_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token, claims = tokens.issue_access_token(
        SECRET, user_id=7, role="owner", token_version=3, session_id="s1", ttl_sec=60
    )
    assert tokens.decode_access_token(SECRET, token) == claims
    assert tokens.decode_access_token(SECRET, token) is tokens.decode_access_token(SECRET, token)  # cached
    real_time = time.time
    monkeypatch.setattr(tokens.time, "time", lambda: real_time() + 3600)
    with pytest.raises(tokens.TokenError) as err:
        tokens.decode_access_token(SECRET, token)
    assert err.value.code == "token_expired"


def test_token_from_another_secret_is_refused() -> None:
    token, _ = tokens.issue_access_token(
        SECRET, user_id=7, role="owner", token_version=0, session_id="s", ttl_sec=60
    )
    with pytest.raises(tokens.TokenError):
        tokens.decode_access_token("another-secret-" + "y" * 20, token)
    with pytest.raises(tokens.TokenError):
        tokens.decode_access_token(SECRET, token + "x")


def test_credential_formats() -> None:
    key = tokens.new_api_key()
    assert tokens.api_key_prefix(key.value) == key.prefix
    assert key.key_hash == tokens.sha256_hex(key.value)
    assert tokens.api_key_prefix("flt_short_x") is None
    assert tokens.api_key_prefix("eyJhbGciOi.eyJzdWIi.sig") is None
    refresh = tokens.new_refresh_token()
    token_id, digest = tokens.split_refresh_token(refresh.value)
    assert token_id == refresh.token_id and digest == refresh.token_hash
    with pytest.raises(tokens.TokenError):
        tokens.split_refresh_token("no-separator")


def test_production_hashes_use_cost_12() -> None:
    assert BCRYPT_COST == 12
    assert hash_password_sync("correct horse battery").startswith("$2b$12$")


async def test_memory_limits_count_in_a_moving_window_and_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = RateLimiter({"login": "3/minute"}, ThrottledMemoryStorage())
    assert limiter.backend == "memory"
    decisions = [await limiter.hit("login", "10.0.0.1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 1 <= decisions[-1].retry_after <= 60
    assert (await limiter.hit("login", "10.0.0.2")).allowed  # another key, its own budget
    storage = limiter.storage
    assert isinstance(storage, ThrottledMemoryStorage)
    # A minute later the window is empty again, and the next pruning pass reclaims the old entries.
    real_time = time.time
    monkeypatch.setattr("limits.aio.storage.memory.time.time", lambda: real_time() + 61)
    monkeypatch.setattr("fleet.ops.ratelimit.time.time", lambda: real_time() + 61)
    storage._last_prune = 0.0
    assert (await limiter.hit("login", "10.0.0.1")).allowed
    for _ in range(100):
        if storage.timer is not None and storage.timer.done():
            break
        await storage.timer if storage.timer is not None else None
    assert all(len(events) <= 1 for events in storage.events.values())
    await limiter.reset()


def test_bucket_parsing() -> None:
    assert parse_bucket(None) is None and parse_bucket("") is None
    assert parse_bucket("30s") == timedelta(seconds=30)
    assert parse_bucket("15m") == timedelta(minutes=15)
    assert parse_bucket("1d") == timedelta(days=1)
    for bad in ("1w", "abc", "0m", "32d", "1.5m"):
        with pytest.raises(ApiError):
            parse_bucket(bad)


async def test_sql_timestamps_are_utc_rfc3339_whatever_the_session_says(db: Database) -> None:
    from fleet.db.queries.pages import iso

    async with db.system() as conn:
        await conn.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
        await conn.execute("SET LOCAL DateStyle = 'German, DMY'")
        row = await conn.fetchrow(
            f"""SELECT {iso("'2026-03-10 21:00:00.25+09'::timestamptz")} AS frac,
                       {iso("'2026-03-10 12:00:00+00'::timestamptz")} AS whole,
                       {iso("NULL::timestamptz")} AS missing"""
        )
    assert dict(row) == {"frac": "2026-03-10T12:00:00.25Z", "whole": "2026-03-10T12:00:00Z", "missing": None}


def test_every_route_identifies_its_caller_once(test_settings: Settings) -> None:
    """`open_session` runs `authenticate`'s code itself (one dependency less per request), so a route must not
    also depend on `authenticate` (`HistoryConn`): its request would count twice against the API limit."""
    from fastapi.routing import APIRoute

    from fleet.api import deps
    from fleet.api.app import create_app

    def calls(dependant: Any) -> set[Any]:
        found = {dependant.call}
        for sub in dependant.dependencies:
            found |= calls(sub)
        return found

    def api_routes(routes: list[Any]) -> list[APIRoute]:
        found = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            included = getattr(route, "original_router", None)  # FastAPI's included routers
            if included is not None:
                found += api_routes(included.routes)
        return found

    sessions = histories = 0
    for route in api_routes(create_app(test_settings).routes):
        used = calls(route.dependant)
        assert not (deps.open_session in used and deps.authenticate in used), route.path
        sessions += deps.open_session in used
        histories += deps.authenticate in used
    assert sessions > 20 and histories > 3  # both kinds of route were found
