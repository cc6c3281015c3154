"""Google sign-in against a local OpenID Connect provider (real HTTP, RS256 ID tokens, JWKS, PKCE)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fleet.api.sessions import REFRESH_COOKIE
from fleet.auth import oidc
from fleet.config import Settings
from fleet.db import Database

from .conftest import Account, LiveServer, MailHandler, make_account, unique_email
from .oidc_provider import Identity, OidcProvider


async def google_sign_in(client: httpx.AsyncClient) -> httpx.Response:
    """Walk the browser's redirects: API → provider → API callback. Returns the callback's answer."""
    start = await client.get("/auth/google")
    assert start.status_code == 302, start.text
    authorize_url = start.headers["location"]
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and "nonce" in query and "state" in query
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(authorize_url)
    assert consent.status_code == 302
    callback = urlsplit(consent.headers["location"])
    return await client.get(f"{callback.path}?{callback.query}")


async def test_new_google_user_is_pending_owner(
    live_api: LiveServer,
    oidc_provider: OidcProvider,
    db: Database,
    admin: Account,
    smtp_server: tuple[MailHandler, int],
) -> None:
    email = unique_email("google")
    subject = uuid.uuid4().hex
    oidc_provider.next_identity = Identity(sub=subject, email=email, name="Olena")
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        done = await google_sign_in(client)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/ui/"
        assert REFRESH_COOKIE in client.cookies
        token = await client.post("/auth/refresh")
        assert token.status_code == 200, token.text
        assert token.json()["user"]["status"] == "pending"
        me = await client.get("/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert me.json()["email"] == email and me.json()["status"] == "pending"
        waiting = await client.get(
            "/vehicles", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
        )
        assert waiting.json()["error"]["code"] == "pending_approval"
    async with db.system() as conn:
        link = await conn.fetchrow(
            "SELECT u.email, o.provider FROM oauth_accounts o JOIN users u ON u.id = o.user_id WHERE o.subject = $1",
            subject,
        )
        notices = await conn.fetchval(
            "SELECT count(*) FROM mail_outbox WHERE recipient = $1 AND body LIKE '%' || $2 || '%'",
            admin.email,
            email,
        )
    assert link["email"] == email and link["provider"] == "google"
    assert notices == 1

    # Signing in again with the same subject finds the same account.
    oidc_provider.next_identity = Identity(sub=subject, email=email)
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        assert (await google_sign_in(client)).status_code == 303
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(email) = lower($1)", email) == 1


async def test_google_links_existing_user_by_verified_email(
    live_api: LiveServer, oidc_provider: OidcProvider, db: Database, api_settings: Settings
) -> None:
    existing = await make_account(db, api_settings)
    oidc_provider.next_identity = Identity(
        sub=uuid.uuid4().hex, email=existing.email.upper(), email_verified=True
    )
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        assert (await google_sign_in(client)).status_code == 303
        refreshed = await client.post("/auth/refresh")
    assert refreshed.json()["user"]["id"] == existing.id
    assert refreshed.json()["user"]["status"] == "active"


async def test_unverified_email_is_not_linked(
    live_api: LiveServer, oidc_provider: OidcProvider, db: Database, api_settings: Settings
) -> None:
    existing = await make_account(db, api_settings)
    oidc_provider.next_identity = Identity(sub=uuid.uuid4().hex, email=existing.email, email_verified=False)
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        refused = await google_sign_in(client)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "email_not_verified"
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM oauth_accounts WHERE user_id = $1", existing.id) == 0


async def test_forged_id_token_and_bad_state_are_refused(
    live_api: LiveServer, oidc_provider: OidcProvider
) -> None:
    oidc_provider.next_identity = Identity(sub=uuid.uuid4().hex, email=unique_email("forged"))
    oidc_provider.sign_with_rogue_key = True
    try:
        async with httpx.AsyncClient(base_url=live_api.url) as client:
            forged = await google_sign_in(client)
    finally:
        oidc_provider.sign_with_rogue_key = False
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "oauth_failed"
    assert REFRESH_COOKIE not in forged.headers.get("set-cookie", "")

    async with httpx.AsyncClient(base_url=live_api.url) as client:
        no_state = await client.get("/auth/google/callback?code=abc&state=xyz")
        assert no_state.status_code == 400
        # A state cookie from one sign-in does not accept another sign-in's state parameter.
        start = await client.get("/auth/google")
        assert start.status_code == 302
        mismatch = await client.get("/auth/google/callback?code=abc&state=not-the-state")
        assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == "oauth_failed"
        denied_state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        denied = await client.get(f"/auth/google/callback?error=access_denied&state={denied_state}")
        assert denied.status_code == 400


def test_state_cookie_is_signed_and_expires() -> None:
    value = oidc.dump_state("k" * 32, {"a": 1})
    assert oidc.load_state("k" * 32, value) == {"a": 1}
    assert oidc.load_state("x" * 32, value) is None
    assert oidc.load_state("k" * 32, value[:-2] + "AA") is None
    assert oidc.load_state("k" * 32, oidc.dump_state("k" * 32, {"a": 1}, ttl_sec=-1)) is None
    assert oidc.load_state("k" * 32, "garbage") is None


@pytest.mark.parametrize("path", ["/auth/google", "/auth/google/callback"])
async def test_google_not_configured_is_404(path: str, db: Database, api_settings: Settings) -> None:
    from fleet.api.app import create_app
    from fleet.runtime import Runtime

    settings = api_settings.model_copy(update={"google_client_id": None, "google_client_secret": None})
    app = create_app(settings, runtime=Runtime(settings=settings, db=db, roles=["api"]))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet") as client,
    ):
        response = await client.get(path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_configured"
