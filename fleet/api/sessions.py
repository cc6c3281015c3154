"""Sign-in sessions: a refresh-token family per sign-in, access tokens minted from it, the refresh cookie.

The refresh token lives only in an HttpOnly cookie scoped to `/auth` (SameSite=Strict, Secure when the
server is reached over HTTPS, directly or through a trusted TLS proxy), so page scripts never see it and it
is sent only to the auth endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import Request, Response

from fleet.api.deps import reached_over_https
from fleet.api.state import ApiState
from fleet.auth import tokens
from fleet.db.queries import audit
from fleet.db.queries import auth as auth_q

REFRESH_COOKIE = "fleet_refresh"
REFRESH_COOKIE_PATH = "/auth"


@dataclass(frozen=True, slots=True)
class IssuedSession:
    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str


async def issue_session(
    conn: asyncpg.Connection,
    state: ApiState,
    user: Any,
    *,
    client_addr: str | None,
    session_id: str | None = None,
) -> IssuedSession:
    """Store a new refresh token (a new family unless `session_id`) and sign an access token for `user`."""
    settings = state.settings
    assert settings.secret_key is not None
    family = session_id or tokens.new_session_id()
    refresh = tokens.new_refresh_token()
    await auth_q.store_refresh_token(
        conn,
        token_id=refresh.token_id,
        user_id=user["id"],
        family_id=family,
        token_hash=refresh.token_hash,
        expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_token_ttl_days),
        client_addr=client_addr,
    )
    access, _ = tokens.issue_access_token(
        settings.secret_key.get_secret_value(),
        user_id=user["id"],
        role=user["role"],
        token_version=user["token_version"],
        session_id=family,
        ttl_sec=settings.access_token_ttl_sec,
    )
    return IssuedSession(access, settings.access_token_ttl_sec, refresh.value, family)


async def sign_in(
    conn: asyncpg.Connection, state: ApiState, user: Any, *, method: str, client_addr: str | None
) -> IssuedSession:
    """Open a session for a user who proved who they are: tokens, last-login time and the audit line."""
    issued = await issue_session(conn, state, user, client_addr=client_addr)
    await auth_q.record_login(conn, user["id"])
    await audit.record(
        conn,
        action="auth.login",
        actor_id=user["id"],
        actor_email=user["email"],
        details={"method": method, "session": issued.session_id},
        client_addr=client_addr,
    )
    return issued


def secure_cookies(state: ApiState, request: Request) -> bool:
    """Mark cookies Secure when the server is published over HTTPS (PUBLIC_URL) or reached over it.

    Behind a TLS-terminating proxy the request arrives over plain HTTP; the proxy's `X-Forwarded-Proto:
    https` says otherwise, and is believed only from a peer in TRUSTED_PROXIES.
    """
    public = state.settings.public_url or ""
    return public.lower().startswith("https://") or reached_over_https(request, state)


def set_refresh_cookie(response: Response, state: ApiState, request: Request, value: str) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        value,
        max_age=state.settings.refresh_token_ttl_days * 86400,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(state, request),
        samesite="strict",
    )


def clear_refresh_cookie(response: Response, state: ApiState, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(state, request),
        samesite="strict",
    )


def token_response(issued: IssuedSession, user: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "user": dict(user),
    }
    if user["status"] == "pending":
        body["message"] = "signed in; your account is awaiting approval, data stays hidden until then"
    return body
