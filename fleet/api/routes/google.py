"""`/auth/google`: sign in with Google (OpenID Connect).

The callback links the Google identity (provider + subject in `oauth_accounts`) to an existing user with
the same, verified, e-mail, or creates a `pending` owner and tells the superusers. It then starts a
session like a password sign-in: the refresh cookie is set and the browser goes to the web UI, which
gets its access token from `POST /auth/refresh`.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fleet.api.deps import ClientAddr, State, ensure_registration_open
from fleet.api.errors import ApiError
from fleet.api.schemas import errors
from fleet.api.sessions import secure_cookies, set_refresh_cookie, sign_in
from fleet.api.state import ApiState
from fleet.auth import oidc
from fleet.db.queries import audit
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import get_user_by_email
from fleet.manage import users
from fleet.ops.metrics_http import AUTH_ATTEMPTS

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/auth/google", tags=["auth"])
AFTER_SIGN_IN = "/ui/"


def _client(state: ApiState) -> Any:
    if not (state.settings.google_sign_in and oidc.configured(state.settings)):
        raise ApiError(404, "not_configured", "Google sign-in is not enabled on this server")
    if state.oauth is None:
        state.oauth = oidc.build_oauth(state.settings)
    return state.oauth.create_client(oidc.PROVIDER)


def _secret(state: ApiState) -> str:
    assert state.settings.secret_key is not None
    return state.settings.secret_key.get_secret_value()


def _callback_url(request: Request, state: ApiState) -> str:
    if state.settings.public_url:
        return state.settings.public_url.rstrip("/") + "/auth/google/callback"
    return str(request.url_for("google_callback"))


def _provider_down(err: Exception) -> ApiError:
    log.warning("oidc_provider_error", error=str(err))
    return ApiError(502, "provider_unavailable", "the identity provider could not be reached; try again")


@router.get(
    "",
    status_code=302,
    responses={302: {"description": "Redirect to the provider's sign-in page"}, **errors(404)},
    summary="Start Google sign-in",
)
async def google_start(request: Request, state: State) -> Response:
    client = _client(state)
    request.scope["session"] = {}
    try:
        response: Response = await client.authorize_redirect(request, _callback_url(request, state))
    except (httpx.HTTPError, ValueError, KeyError) as err:
        raise _provider_down(err) from err
    response.set_cookie(
        oidc.STATE_COOKIE,
        oidc.dump_state(_secret(state), request.scope["session"]),
        max_age=oidc.STATE_TTL_SEC,
        path=oidc.STATE_COOKIE_PATH,
        httponly=True,
        secure=secure_cookies(state, request),
        samesite="lax",  # the provider's redirect back is a cross-site navigation
    )
    return response


async def _resolve_user(conn: Any, state: ApiState, claims: dict[str, Any], address: str | None) -> Any:
    subject = str(claims.get("sub") or "")
    email = claims.get("email")
    if not subject:
        raise ApiError(400, "oauth_failed", "the identity provider sent no subject")
    user = await auth_q.user_by_oauth(conn, oidc.PROVIDER, subject)
    if user is not None:
        return user
    if not email or not oidc.verified(claims.get("email_verified")):
        raise ApiError(400, "email_not_verified", "the Google account has no verified e-mail address")
    user = await get_user_by_email(conn, email)
    if user is None:
        ensure_registration_open(state)
        user = await users.register_owner(
            conn,
            state.settings,
            email=email,
            password_hash=None,
            name=claims.get("name"),
            method="google",
            client_addr=address,
        )
    await auth_q.link_oauth(conn, user_id=user["id"], provider=oidc.PROVIDER, subject=subject, email=email)
    await audit.record(
        conn,
        action="auth.oauth_link",
        actor_id=user["id"],
        actor_email=user["email"],
        target=f"user:{user['id']}",
        details={"provider": oidc.PROVIDER},
        client_addr=address,
    )
    return user


@router.get(
    "/callback",
    name="google_callback",
    status_code=303,
    responses={
        303: {"description": "Signed in: refresh cookie set, redirect to the web UI"},
        **errors(400, 403, 404),
    },
    summary="Finish Google sign-in (the provider redirects here)",
)
async def google_callback(request: Request, state: State, address: ClientAddr) -> Response:
    client = _client(state)
    saved = oidc.load_state(_secret(state), request.cookies.get(oidc.STATE_COOKIE))
    if saved is None:
        raise ApiError(400, "oauth_failed", "the sign-in session expired or is missing; start again")
    request.scope["session"] = saved
    try:
        token = await client.authorize_access_token(request)
    except oidc.OAuthError as err:
        AUTH_ATTEMPTS.labels("google", "rejected").inc()
        raise ApiError(400, "oauth_failed", f"sign-in was not completed: {err.error or 'error'}") from err
    except httpx.HTTPError as err:
        raise _provider_down(err) from err
    except (oidc.JoseError, ValueError, KeyError, TypeError) as err:  # invalid ID token (signature, nonce...)
        AUTH_ATTEMPTS.labels("google", "rejected").inc()
        raise ApiError(400, "oauth_failed", "the identity provider's answer could not be verified") from err
    claims = token.get("userinfo")
    if not isinstance(claims, dict):
        raise ApiError(400, "oauth_failed", "the identity provider sent no ID token")
    blocked = False
    async with state.db.system() as conn:
        user = await _resolve_user(conn, state, dict(claims), address)
        if user["status"] == "blocked":
            blocked = True
            await audit.record(
                conn,
                action="auth.login_failed",
                actor_id=user["id"],
                actor_email=user["email"],
                details={"reason": "blocked", "method": "google"},
                client_addr=address,
            )
        else:
            issued = await sign_in(conn, state, user, method="google", client_addr=address)
    state.wake_mail()
    if blocked:
        AUTH_ATTEMPTS.labels("google", "blocked").inc()
        raise ApiError(403, "account_blocked", "this account is blocked")
    AUTH_ATTEMPTS.labels("google", "ok").inc()
    response = RedirectResponse(AFTER_SIGN_IN, status_code=303)
    set_refresh_cookie(response, state, request, issued.refresh_token)
    response.delete_cookie(oidc.STATE_COOKIE, path=oidc.STATE_COOKIE_PATH)
    return response
