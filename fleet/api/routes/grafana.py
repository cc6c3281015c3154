"""`/auth/grafana`: the identity check nginx's `auth_request` makes before every request to Grafana.

`GET /auth/grafana` answers 200 with the headers Grafana's auth proxy reads (`X-WEBAUTH-USER` and friends),
401 without a valid session, 403 for a pending or blocked account. It accepts, in this order, whichever is
present and valid: `Authorization: Bearer` (access token or personal API key), the Grafana session cookie
(`fleet_grafana`, scoped to Grafana's path), the refresh cookie (`fleet_refresh`; validated, not consumed).

`GET /auth/grafana/login?next=/grafana/...` is where nginx sends a browser that has no Grafana session: the
refresh cookie (sent here because the path is under `/auth`) proves the sign-in, the Grafana cookie is set and
the browser goes back to `next`. Without a sign-in the browser goes to the web UI's login page.

`X-WEBAUTH-USER` is the user's opaque Grafana login (see migration 0004), which the dashboards pass to the
database functions as `${__user.login}`; it is not the e-mail, so a hand-made query naming someone's e-mail
reaches nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials

from fleet.api.deps import ClientAddr, State, bearer_scheme, principal_for
from fleet.api.errors import ApiError
from fleet.api.schemas import errors
from fleet.api.sessions import REFRESH_COOKIE, secure_cookies
from fleet.api.state import ApiState
from fleet.auth import proxy_session, tokens
from fleet.db.queries import audit
from fleet.db.queries import grafana as grafana_q

router = APIRouter(prefix="/auth/grafana", tags=["auth"])

GRAFANA_COOKIE = "fleet_grafana"
DEFAULT_GRAFANA_PATH = "/grafana/"
LOGIN_PAGE = "/ui/login"
# Every Fleet user is a Grafana Viewer: dashboards are provisioned read-only, data access is per login.
GRAFANA_ROLE = "Viewer"


@dataclass(frozen=True, slots=True)
class GrafanaIdentity:
    user_id: int
    email: str
    name: str | None
    role: str


def grafana_path(state: ApiState) -> str:
    """The path Grafana is published under (from GRAFANA_URL), with a trailing slash."""
    path = urlsplit(state.settings.grafana_url).path if state.settings.grafana_url else DEFAULT_GRAFANA_PATH
    path = path or DEFAULT_GRAFANA_PATH
    return path if path.endswith("/") else path + "/"


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def _require_active(status: str) -> None:
    if status == "pending":
        raise ApiError(403, "pending_approval", "your account is awaiting approval by an administrator")
    if status != "active":
        raise ApiError(403, "account_blocked", "this account is blocked")


async def _from_bearer(state: ApiState, token: str) -> GrafanaIdentity:
    principal = await principal_for(state, token)
    if principal.user_id is None:
        raise _unauthorized("no_user", "the static API key belongs to no user; Grafana needs a person")
    async with state.db.system() as conn:
        row = await grafana_q.user_session(conn, principal.user_id, principal.session_id or "")
    if row is None:
        raise _unauthorized("token_revoked", "this session has ended; sign in again")
    if principal.kind == "jwt" and (
        row["session_over"]
        or row["token_version"] != principal.token_version
        or row["role"] != principal.role
    ):
        raise _unauthorized("token_revoked", "this session has ended; sign in again")
    _require_active(row["status"])
    return GrafanaIdentity(row["id"], row["email"], row["name"], row["role"])


async def _from_grafana_cookie(state: ApiState, value: str) -> GrafanaIdentity:
    assert state.settings.secret_key is not None
    try:
        session = proxy_session.verify(state.settings.secret_key.get_secret_value(), value)
    except tokens.TokenError as err:
        raise _unauthorized(err.code, err.message) from err
    async with state.db.system() as conn:
        row = await grafana_q.user_session(conn, session.user_id, session.session_id)
    if row is None or row["session_over"] or row["token_version"] != session.token_version:
        raise _unauthorized("session_revoked", "this session has ended; sign in again")
    _require_active(row["status"])
    return GrafanaIdentity(row["id"], row["email"], row["name"], row["role"])


async def _refresh_row(state: ApiState, value: str) -> tuple[GrafanaIdentity, str, datetime, int]:
    """Validate a refresh cookie without consuming it; return the identity, session, expiry, version."""
    try:
        token_id, token_hash = tokens.split_refresh_token(value)
    except tokens.TokenError as err:
        raise _unauthorized(err.code, err.message) from err
    async with state.db.system() as conn:
        row = await grafana_q.refresh_session(conn, token_id)
    if row is None or not tokens.same_secret(token_hash, row["token_hash"]):
        raise _unauthorized("invalid_refresh_token", "the refresh token is not valid")
    if row["revoked_at"] is not None or row["used_at"] is not None:
        raise _unauthorized("session_revoked", "this session has ended; sign in again")
    if row["expires_at"] <= datetime.now(UTC):
        raise _unauthorized("refresh_token_expired", "the session has expired; sign in again")
    _require_active(row["status"])
    identity = GrafanaIdentity(row["id"], row["email"], row["name"], row["role"])
    return identity, row["family_id"], row["expires_at"], row["token_version"]


async def identify(
    request: Request, state: ApiState, credentials: HTTPAuthorizationCredentials | None
) -> GrafanaIdentity:
    """The first valid credential of the request, else the first failure (401, or 403 for the account)."""
    attempts: list[tuple[Callable[[ApiState, str], Awaitable[GrafanaIdentity]], str]] = []
    if credentials is not None and credentials.credentials:
        attempts.append((_from_bearer, credentials.credentials))
    cookie = request.cookies.get(GRAFANA_COOKIE)
    if cookie:
        attempts.append((_from_grafana_cookie, cookie))
    refresh = request.cookies.get(REFRESH_COOKIE)
    if refresh:

        async def from_refresh(state: ApiState, value: str) -> GrafanaIdentity:
            return (await _refresh_row(state, value))[0]

        attempts.append((from_refresh, refresh))
    first_error: ApiError | None = None
    for check, value in attempts:
        try:
            return await check(state, value)
        except ApiError as err:
            if err.status_code == 403:
                raise  # a valid credential of an account that may not use Grafana
            first_error = first_error or err
    raise first_error or _unauthorized("unauthorized", "sign in to use the dashboards")


@router.get(
    "",
    status_code=200,
    responses={
        200: {
            "description": "Signed in: `X-WEBAUTH-USER` (opaque Grafana login), `X-WEBAUTH-EMAIL`, "
            "`X-WEBAUTH-NAME`, `X-WEBAUTH-ROLE` (Grafana role) and `X-Fleet-Role` (superuser or owner)"
        },
        **errors(401, 403),
    },
    summary="nginx auth_request for Grafana: 200 with the auth-proxy headers, 401, or 403",
)
async def grafana_auth(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Response:
    identity = await identify(request, state, credentials)
    async with state.db.system() as conn:
        login = await grafana_q.grafana_login(conn, identity.user_id)
    headers = {
        "X-WEBAUTH-USER": login,
        "X-WEBAUTH-EMAIL": identity.email,
        # Header values are Latin-1: a name that is not stays out, Grafana then shows the e-mail.
        "X-WEBAUTH-NAME": _latin1(identity.name) or identity.email,
        "X-WEBAUTH-ROLE": GRAFANA_ROLE,
        "X-Fleet-Role": identity.role,
        "Cache-Control": "no-store",
    }
    return Response(status_code=200, headers=headers)


def _latin1(text: str | None) -> str | None:
    if not text:
        return None
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return text


def _requested_next(request: Request, given: str | None) -> str | None:
    """`next` as nginx sends it: everything after `next=`, verbatim (the dashboard's own query string included).

    nginx has no URL encoder, so `/auth/grafana/login?next=$request_uri` arrives with the target's `&`s
    unescaped; reading the raw remainder keeps them. A `next` we encoded ourselves (from the login page's
    round trip) arrives percent-encoded and is decoded once.
    """
    raw = request.url.query
    if raw.startswith("next="):
        value = raw[len("next=") :]
        return unquote(value) if value[:3].upper() == "%2F" else value
    return given


def _safe_next(state: ApiState, target: str | None) -> str:
    """Only a path under Grafana's own (so no scheme and no host): never an open redirect."""
    base = grafana_path(state)
    if not target or not target.startswith(base) or any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        return base
    return target


@router.get(
    "/login",
    status_code=303,
    responses={303: {"description": "To `next` with the Grafana cookie set, or to the login page"}},
    summary="Open a Grafana session from the refresh cookie, then go back to `next`",
)
async def grafana_login(
    request: Request,
    state: State,
    address: ClientAddr,
    next_: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    target = _safe_next(state, _requested_next(request, next_))
    refresh = request.cookies.get(REFRESH_COOKIE)
    try:
        if not refresh:
            raise _unauthorized("no_refresh_token", "sign in first")
        identity, session_id, expires_at, version = await _refresh_row(state, refresh)
    except ApiError as err:
        if err.status_code == 403:
            raise
        back = f"/auth/grafana/login?next={quote(target, safe='/')}"
        return RedirectResponse(f"{LOGIN_PAGE}?next={quote(back, safe='/')}", status_code=303)
    assert state.settings.secret_key is not None
    ttl = min(proxy_session.COOKIE_TTL_SEC, max(int((expires_at - datetime.now(UTC)).total_seconds()), 1))
    value = proxy_session.issue(
        state.settings.secret_key.get_secret_value(),
        user_id=identity.user_id,
        session_id=session_id,
        token_version=version,
        ttl_sec=ttl,
    )
    async with state.db.system() as conn:
        await audit.record(
            conn,
            action="grafana.login",
            actor_id=identity.user_id,
            actor_email=identity.email,
            target=f"session:{session_id}",
            client_addr=address,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        GRAFANA_COOKIE,
        value,
        max_age=ttl,
        path=grafana_path(state),
        httponly=True,
        secure=secure_cookies(state, request),
        samesite="strict",
    )
    return response
