"""`/auth`: registration, password sign-in, refresh rotation, logout, the current caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from fleet.api.deps import AnySession, ClientAddr, State, bearer_scheme, ensure_registration_open, rate_limit
from fleet.api.errors import ApiError
from fleet.api.schemas import (
    LoginRequest,
    MeResponse,
    RegisterRequest,
    RegisterResponse,
    TokenResponse,
    errors,
)
from fleet.api.sessions import (
    REFRESH_COOKIE,
    clear_refresh_cookie,
    issue_session,
    set_refresh_cookie,
    sign_in,
    token_response,
)
from fleet.auth import tokens
from fleet.db.queries import audit
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import create_user, get_user_by_email
from fleet.mail.messages import notify_new_registration
from fleet.ops.metrics_http import AUTH_ATTEMPTS
from fleet.passwords import hash_password, validate_password, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])

# A real cost-12 bcrypt hash of a throwaway string: verifying against it when the e-mail is unknown makes
# a failed sign-in take as long as a wrong password, so timing does not tell which e-mails exist.
_TIMING_HASH = "$2b$12$aU/ZWWjqSlTGCr6s66qgnum2B5NobN6SoDkVtPSFoykygi4mFXz8y"


@router.post(
    "/register",
    status_code=201,
    response_model=RegisterResponse,
    responses=errors(400, 403, 409, 413, 422, 429),
    dependencies=[rate_limit("register")],
    summary="Register an owner account (status pending until a superuser approves it)",
)
async def register(body: RegisterRequest, state: State, address: ClientAddr) -> dict[str, Any]:
    ensure_registration_open(state)
    validate_password(body.password)
    hashed = await hash_password(body.password)
    async with state.db.system() as conn:
        user = await create_user(
            conn, email=body.email, password_hash=hashed, role="owner", status="pending", name=body.name
        )
        await notify_new_registration(conn, state.settings, email=user["email"], method="password")
        await audit.record(
            conn,
            action="auth.register",
            actor_id=user["id"],
            actor_email=user["email"],
            target=f"user:{user['id']}",
            client_addr=address,
        )
    state.wake_mail()
    return {
        "user": dict(user),
        "message": "registered; an administrator will approve the account and you will get an e-mail",
    }


@router.post(
    "/login",
    response_model=TokenResponse,
    responses=errors(401, 403, 413, 422, 429),
    dependencies=[rate_limit("login")],
    summary="Sign in with e-mail and password; sets the refresh-token cookie",
)
async def login(
    body: LoginRequest, request: Request, response: Response, state: State, address: ClientAddr
) -> dict[str, Any]:
    async with state.db.system() as conn:
        user = await get_user_by_email(conn, body.email)
    password_ok = await verify_password(body.password, user["password_hash"] if user else _TIMING_HASH)
    if user is None or not password_ok or user["status"] == "blocked":
        reason = "blocked" if user is not None and password_ok else "bad_credentials"
        async with state.db.system() as conn:
            await audit.record(
                conn,
                action="auth.login_failed",
                actor_id=user["id"] if user else None,
                actor_email=body.email[:320],
                details={"reason": reason, "method": "password"},
                client_addr=address,
            )
        AUTH_ATTEMPTS.labels("password", reason).inc()
        if reason == "blocked":
            raise ApiError(403, "account_blocked", "this account is blocked")
        raise ApiError(401, "invalid_credentials", "wrong e-mail or password")
    async with state.db.system() as conn:
        issued = await sign_in(conn, state, user, method="password", client_addr=address)
    AUTH_ATTEMPTS.labels("password", "ok").inc()
    set_refresh_cookie(response, state, request, issued.refresh_token)
    return token_response(issued, user)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses=errors(401, 403, 429),
    dependencies=[rate_limit("refresh")],
    summary="Exchange the refresh-token cookie for a new access token (the refresh token rotates)",
    description=(
        "Each refresh token works once. Presenting one that was already used means it was copied: the "
        "whole session (every refresh token and access token descended from the same sign-in) is revoked."
    ),
)
async def refresh(request: Request, response: Response, state: State, address: ClientAddr) -> dict[str, Any]:
    value = request.cookies.get(REFRESH_COOKIE)
    if not value:
        raise ApiError(401, "no_refresh_token", "no refresh token: sign in again")
    try:
        token_id, token_hash = tokens.split_refresh_token(value)
    except tokens.TokenError as err:
        raise ApiError(401, err.code, err.message) from err
    failure: ApiError | None = None
    async with state.db.system() as conn:
        row = await auth_q.lock_refresh_token(conn, token_id)
        if row is None or not tokens.same_secret(token_hash, row["token_hash"]):
            failure = ApiError(401, "invalid_refresh_token", "the refresh token is not valid")
        elif row["revoked_at"] is not None:
            failure = ApiError(401, "session_revoked", "this session has ended; sign in again")
        elif row["used_at"] is not None:
            # Rotation means a used token is never presented again by its rightful holder.
            await auth_q.revoke_family(conn, row["family_id"])
            await audit.record(
                conn,
                action="token.reuse_detected",
                actor_id=row["id"],
                actor_email=row["email"],
                target=f"session:{row['family_id']}",
                details={"revoked": "session"},
                client_addr=address,
            )
            failure = ApiError(
                401, "refresh_token_reused", "this refresh token was already used; session revoked"
            )
        elif row["expires_at"] <= datetime.now(UTC):
            failure = ApiError(401, "refresh_token_expired", "the session has expired; sign in again")
        elif row["status"] == "blocked":
            await auth_q.revoke_family(conn, row["family_id"])
            failure = ApiError(403, "account_blocked", "this account is blocked")
        else:
            await auth_q.mark_refresh_used(conn, token_id)
            issued = await issue_session(conn, state, row, client_addr=address, session_id=row["family_id"])
            await audit.record(
                conn,
                action="token.refresh",
                actor_id=row["id"],
                actor_email=row["email"],
                target=f"session:{row['family_id']}",
                client_addr=address,
            )
    if failure is not None:  # raised after the block so that revocations above are committed
        scratch = Response()
        clear_refresh_cookie(scratch, state, request)
        failure.headers = {"set-cookie": scratch.headers["set-cookie"]}
        raise failure
    set_refresh_cookie(response, state, request, issued.refresh_token)
    return token_response(issued, row)


@router.post(
    "/logout",
    status_code=204,
    responses=errors(429),
    summary="End the session of the refresh cookie and/or of the bearer access token",
)
async def logout(
    request: Request,
    state: State,
    address: ClientAddr,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Response:
    families: dict[str, int | None] = {}
    settings = state.settings
    if credentials is not None and settings.secret_key is not None:
        try:
            claims = tokens.decode_access_token(
                settings.secret_key.get_secret_value(), credentials.credentials
            )
            families[claims.session_id] = claims.user_id
        except tokens.TokenError:
            pass  # an expired or foreign token: nothing of ours to revoke
    cookie = request.cookies.get(REFRESH_COOKIE)
    async with state.db.system() as conn:
        if cookie:
            try:
                token_id, token_hash = tokens.split_refresh_token(cookie)
                row = await auth_q.lock_refresh_token(conn, token_id)
                if row is not None and tokens.same_secret(token_hash, row["token_hash"]):
                    families[row["family_id"]] = row["id"]
            except tokens.TokenError:
                pass
        for family, user_id in families.items():
            revoked = await auth_q.revoke_family(conn, family)
            await audit.record(
                conn,
                action="token.revoke",
                actor_id=user_id,
                target=f"session:{family}",
                details={"reason": "logout", "tokens": revoked},
                client_addr=address,
            )
    response = Response(status_code=204)
    clear_refresh_cookie(response, state, request)
    return response


@router.get(
    "/me",
    response_model=MeResponse,
    responses=errors(401, 403, 429),
    summary="Who the bearer credential belongs to (answers for pending accounts too)",
)
async def me(session: AnySession) -> dict[str, Any]:
    principal = session.principal
    return {
        "user_id": principal.user_id,
        "email": principal.email,
        "role": principal.role,
        "status": principal.status,
        "auth": principal.kind,
    }
