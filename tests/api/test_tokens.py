"""Token lifecycle: expiry, refresh rotation, reuse detection, logout, blocking."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt

from fleet.api.sessions import REFRESH_COOKIE
from fleet.auth import tokens
from fleet.config import Settings
from fleet.db import Database
from fleet.passwords import hash_password

from .conftest import PASSWORD, Account, LiveServer, make_account


async def password_account(db: Database, settings: Settings) -> Account:
    return await make_account(db, settings, password_hash=await hash_password(PASSWORD))


async def sign_in(client: httpx.AsyncClient, email: str) -> str:
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_access_token_shape_and_cookie(
    live_api: LiveServer, db: Database, api_settings: Settings
) -> None:
    account = await password_account(db, api_settings)
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        response = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    assert claims["sub"] == str(account.id) and claims["role"] == "owner"
    assert {"jti", "exp", "iat", "ver", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 900
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{REFRESH_COOKIE}=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/auth" in lowered
    assert "max-age=2592000" in lowered
    assert "secure" not in lowered  # plain http in tests; see test_secure_cookie_behind_https


async def test_secure_cookie_when_public_url_is_https(db: Database, api_settings: Settings) -> None:
    from fleet.api.app import create_app
    from fleet.runtime import Runtime

    settings = api_settings.model_copy(update={"public_url": "https://fleet.example.com"})
    account = await password_account(db, settings)
    app = create_app(settings, runtime=Runtime(settings=settings, db=db, roles=["api"]))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet") as client,
    ):
        response = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    assert "secure" in response.headers["set-cookie"].lower()


async def test_expired_and_forged_tokens(
    http: httpx.AsyncClient, admin: Account, api_settings: Settings
) -> None:
    assert api_settings.secret_key is not None
    secret = api_settings.secret_key.get_secret_value()
    expired, _ = tokens.issue_access_token(
        secret,
        user_id=admin.id,
        role="superuser",
        token_version=0,
        session_id=admin.session_id,
        ttl_sec=60,
        now=time.time() - 3600,
    )
    response = await http.get("/vehicles", headers=bearer(expired))
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_expired"
    assert response.headers["www-authenticate"] == "Bearer"
    forged, _ = tokens.issue_access_token(
        "not-the-server-secret-at-all",
        user_id=admin.id,
        role="superuser",
        token_version=0,
        session_id=admin.session_id,
        ttl_sec=60,
    )
    assert (await http.get("/vehicles", headers=bearer(forged))).json()["error"]["code"] == "invalid_token"
    unsigned = jwt.encode({"sub": str(admin.id), "role": "superuser"}, key=None, algorithm="none")
    assert (await http.get("/vehicles", headers=bearer(unsigned))).status_code == 401
    assert (await http.get("/vehicles")).json()["error"]["code"] == "unauthorized"


async def test_refresh_rotates_and_reuse_revokes_the_family(
    live_api: LiveServer, db: Database, api_settings: Settings
) -> None:
    account = await password_account(db, api_settings)
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        first_access = await sign_in(client, account.email)
        first_refresh = client.cookies[REFRESH_COOKIE]

        rotated = await client.post("/auth/refresh")
        assert rotated.status_code == 200, rotated.text
        second_refresh = client.cookies[REFRESH_COOKIE]
        second_access = rotated.json()["access_token"]
        assert second_refresh != first_refresh and second_access != first_access
        assert (await client.get("/vehicles", headers=bearer(second_access))).status_code == 200

        # An attacker replays the first (already used) refresh token, after the grace period for concurrent
        # use (two tabs refreshing at once) is over.
        await age_used_refresh_tokens(db, account.id, seconds=api_settings.refresh_reuse_grace_sec + 1)
        client.cookies.clear()
        replay = await client.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={first_refresh}"})
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "refresh_token_reused"
        # The whole session is gone: the newest refresh token and every access token of the family.
        client.cookies.clear()
        legit = await client.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={second_refresh}"})
        assert legit.status_code == 401 and legit.json()["error"]["code"] == "session_revoked"
        for token in (first_access, second_access):
            dead = await client.get("/vehicles", headers=bearer(token))
            assert dead.status_code == 401 and dead.json()["error"]["code"] == "token_revoked"

        # A new sign-in is a new family and works.
        fresh = await sign_in(client, account.email)
        assert (await client.get("/vehicles", headers=bearer(fresh))).status_code == 200

    async with db.system() as conn:
        reuse = await conn.fetchval(
            "SELECT count(*) FROM admin_audit_log WHERE action = 'token.reuse_detected' AND actor_id = $1",
            account.id,
        )
    assert reuse == 1


async def age_used_refresh_tokens(db: Database, user_id: int, *, seconds: float) -> None:
    """Make the user's used refresh tokens look used `seconds` ago (instead of waiting that long)."""
    async with db.system() as conn:
        await conn.execute(
            """UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $2)
               WHERE user_id = $1 AND used_at IS NOT NULL""",
            user_id,
            float(seconds),
        )


async def test_two_tabs_refreshing_at_once_keep_the_session(
    live_api: LiveServer, db: Database, api_settings: Settings
) -> None:
    account = await password_account(db, api_settings)
    async with httpx.AsyncClient(base_url=live_api.url) as first_tab:
        await sign_in(first_tab, account.email)
        cookie = first_tab.cookies[REFRESH_COOKIE]
        first_tab.cookies.clear()
        async with httpx.AsyncClient(base_url=live_api.url) as second_tab:
            both = await asyncio.gather(
                *(
                    tab.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={cookie}"})
                    for tab in (first_tab, second_tab)
                )
            )
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            for response in both:  # every tab goes on with its own tokens of the same session
                access = response.json()["access_token"]
                assert (await first_tab.get("/vehicles", headers=bearer(access))).status_code == 200
                cookie_header = response.headers["set-cookie"]
                assert cookie_header.startswith(f"{REFRESH_COOKIE}=")
                again = await second_tab.post(
                    "/auth/refresh", headers={"Cookie": cookie_header.split(";", 1)[0]}
                )
                assert again.status_code == 200, again.text
    async with db.system() as conn:
        concurrent = await conn.fetchval(
            """SELECT count(*) FROM admin_audit_log WHERE action = 'token.refresh' AND actor_id = $1
               AND details->>'concurrent' = 'true'""",
            account.id,
        )
        reused = await conn.fetchval(
            "SELECT count(*) FROM admin_audit_log WHERE action = 'token.reuse_detected' AND actor_id = $1",
            account.id,
        )
    assert (concurrent, reused) == (1, 0)


async def test_refresh_without_or_with_bad_cookie(http: httpx.AsyncClient) -> None:
    assert (await http.post("/auth/refresh")).json()["error"]["code"] == "no_refresh_token"
    bad = await http.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}=nonsense"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_refresh_token"
    forged = await http.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}=abc.def"})
    assert forged.json()["error"]["code"] == "invalid_refresh_token"


async def test_logout_revokes_access_and_refresh(
    live_api: LiveServer, db: Database, api_settings: Settings
) -> None:
    account = await password_account(db, api_settings)
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        access = await sign_in(client, account.email)
        refresh = client.cookies[REFRESH_COOKIE]
        out = await client.post("/auth/logout", headers=bearer(access))
        assert out.status_code == 204
        assert (
            f"{REFRESH_COOKIE}=" in out.headers["set-cookie"]
            and "max-age=0" in out.headers["set-cookie"].lower()
        )
        assert (await client.get("/vehicles", headers=bearer(access))).status_code == 401
        client.cookies.clear()
        again = await client.post("/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={refresh}"})
        assert again.json()["error"]["code"] == "session_revoked"
        assert (await client.post("/auth/logout")).status_code == 204  # idempotent, nothing to revoke


async def test_blocking_revokes_every_token_at_once(
    live_api: LiveServer, db: Database, api_settings: Settings, admin: Account
) -> None:
    account = await password_account(db, api_settings)
    async with (
        httpx.AsyncClient(base_url=live_api.url) as phone,
        httpx.AsyncClient(base_url=live_api.url) as laptop,
    ):
        phone_token = await sign_in(phone, account.email)
        laptop_token = await sign_in(laptop, account.email)
        key = await laptop.post("/auth/api-keys", json={"name": "script"}, headers=bearer(laptop_token))
        assert key.status_code == 201
        api_key = key.json()["key"]
        assert (await phone.get("/vehicles", headers=bearer(api_key))).status_code == 200

        blocked = await phone.post(f"/admin/users/{account.id}/block", headers=admin.headers)
        assert blocked.status_code == 200 and blocked.json()["status"] == "blocked"

        for token in (phone_token, laptop_token):
            assert (await phone.get("/vehicles", headers=bearer(token))).status_code == 401
        by_key = await phone.get("/vehicles", headers=bearer(api_key))
        assert by_key.status_code == 401 and by_key.json()["error"]["code"] == "invalid_api_key"
        refused = await phone.post("/auth/refresh")
        assert refused.status_code == 401
        login = await laptop.post("/auth/login", json={"email": account.email, "password": PASSWORD})
        assert login.status_code == 403 and login.json()["error"]["code"] == "account_blocked"
        self_block = await phone.post(f"/admin/users/{admin.id}/block", headers=admin.headers)
        assert self_block.status_code == 409
