"""`/auth`: registration, password sign-in, refresh rotation, logout, password change, the current caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from fleet.api.deps import (
    AnySession,
    ClientAddr,
    State,
    actor_for,
    bearer_scheme,
    enforce,
    ensure_registration_open,
    rate_limit,
)
from fleet.api.errors import ApiError
from fleet.api.manage_schemas import PasswordChange, PasswordChanged
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
    IssuedSession,
    clear_refresh_cookie,
    issue_session,
    set_refresh_cookie,
    sign_in,
    token_response,
)
from fleet.auth import tokens
from fleet.db.queries import audit
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import get_user_by_email
from fleet.errors import Conflict
from fleet.manage import users
from fleet.ops.metrics_http import AUTH_ATTEMPTS, AUTH_FAILURES
from fleet.passwords import check_and_hash, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])

# A real cost-12 bcrypt hash of a throwaway string. Whenever there is no password hash to check against —
# an unknown e-mail, or an account that signs in with Google only — the password is checked against this one,
# so every failed sign-in costs one bcrypt verification and timing does not tell which e-mails exist or how
# they sign in (bench/bench_login_timing.py measures it).
_TIMING_HASH = "$2b$12$aU/ZWWjqSlTGCr6s66qgnum2B5NobN6SoDkVtPSFoykygi4mFXz8y"
REGISTERED_MESSAGE = (
    "registration received: if the address can be registered, an account now awaits an administrator's "
    "approval; either way a message was sent to the address"
)


@router.post(
    "/register",
    status_code=202,
    response_model=RegisterResponse,
    responses=errors(400, 403, 413, 422, 429),
    dependencies=[rate_limit("register")],
    summary="Register an owner account (pending until a superuser approves it)",
    description=(
        "The answer is the same whether or not the e-mail already has an account, so registration cannot be "
        "used to find out who has one. A new account is created `pending` (superusers are told); the owner of "
        "an address that already has an account gets an e-mail saying so instead. The password policy "
        "(`weak_password`) applies: at least 10 characters, not the e-mail, not a common or easily guessed one."
    ),
)
async def register(body: RegisterRequest, state: State, address: ClientAddr) -> dict[str, Any]:
    ensure_registration_open(state)  # 403 while the registration flag is off
    # Policy and hashing first, for every request: an existing address must not answer faster.
    hashed = await check_and_hash(body.password, email=body.email)
    async with state.db.system() as conn:
        existing = await get_user_by_email(conn, body.email)
        if existing is None:
            await conn.execute("SAVEPOINT register")
            try:
                await users.register_owner(
                    conn,
                    state.settings,
                    email=body.email,
                    password_hash=hashed,
                    name=body.name,
                    method="password",
                    client_addr=address,
                )
            except Conflict:  # registered concurrently: answer as for any existing address
                await conn.execute("ROLLBACK TO SAVEPOINT register")
                existing = await get_user_by_email(conn, body.email)
        if existing is not None:
            await users.registration_attempt(conn, state.settings, existing, client_addr=address)
    state.wake_mail()
    return {"message": REGISTERED_MESSAGE}


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
    stored = user["password_hash"] if user is not None else None
    # Always one bcrypt verification, against the timing hash when there is nothing real to check.
    matched = await verify_password(body.password, stored or _TIMING_HASH)
    password_ok = matched and stored is not None
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
        AUTH_FAILURES.labels("password").inc()
        if reason == "blocked":
            raise ApiError(403, "account_blocked", "this account is blocked")
        raise ApiError(401, "invalid_credentials", "wrong e-mail or password")
    async with state.db.system() as conn:
        issued = await sign_in(conn, state, user, method="password", client_addr=address)
    AUTH_ATTEMPTS.labels("password", "ok").inc()
    set_refresh_cookie(response, state, request, issued.refresh_token)
    return token_response(issued, user)


@router.post(
    "/password",
    response_model=PasswordChanged,
    responses=errors(400, 401, 403, 409, 422, 429),
    summary="Change your own password (the current one is required); your other sessions end",
)
async def change_password(
    body: PasswordChange, session: AnySession, state: State, address: ClientAddr
) -> dict[str, Any]:
    principal = session.principal
    if principal.kind != "jwt":
        raise ApiError(403, "forbidden", "sign in with your password to change it (not with an API key)")
    assert principal.user_id is not None
    # Guessing the current password through this endpoint is limited like sign-in, per account.
    await enforce(state, "login", f"user:{principal.user_id}")
    async with state.db.system() as conn:
        ended = await users.change_own_password(
            conn,
            actor_for(principal, address),
            state.settings,
            current_password=body.current_password,
            new_password=body.new_password,
            keep_session=principal.session_id,
        )
    state.wake_mail()
    return {"message": "password changed", "other_sessions_ended": ended}


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses=errors(401, 403, 429),
    dependencies=[rate_limit("refresh")],
    summary="Exchange the refresh-token cookie for a new access token (the refresh token rotates)",
    description=(
        "Each refresh token works once, but for a short grace period (`REFRESH_REUSE_GRACE_SEC`, 30 s) in which "
        "a concurrent refresh (two tabs) with the same token also succeeds. Presenting a used token after that "
        "means it was copied: the whole session (every refresh token and access token descended from the same "
        "sign-in) is revoked."
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
        elif row["used_at"] is not None and _within_grace(row, state) and row["status"] != "blocked":
            # Two tabs refreshing at once present the same token: the later one, within the grace period,
            # gets tokens of the same session too, instead of ending it.
            issued = await _continue_session(conn, state, row, address, concurrent=True)
        elif row["used_at"] is not None:
            # Rotation means a used token is not presented again by its rightful holder once the grace
            # period for concurrent use is over: it was copied.
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
            issued = await _continue_session(conn, state, row, address, concurrent=False)
    if failure is not None:  # raised after the block so that revocations above are committed
        scratch = Response()
        clear_refresh_cookie(scratch, state, request)
        failure.headers = {"set-cookie": scratch.headers["set-cookie"]}
        raise failure
    set_refresh_cookie(response, state, request, issued.refresh_token)
    return token_response(issued, row)


async def _continue_session(
    conn: Any, state: Any, row: Any, address: str | None, *, concurrent: bool
) -> IssuedSession:
    """New tokens of the refresh token's session, and the audit line of the refresh."""
    issued = await issue_session(conn, state, row, client_addr=address, session_id=row["family_id"])
    await audit.record(
        conn,
        action="token.refresh",
        actor_id=row["id"],
        actor_email=row["email"],
        target=f"session:{row['family_id']}",
        details={"concurrent": True} if concurrent else None,
        client_addr=address,
    )
    return issued


def _within_grace(row: Any, state: Any) -> bool:
    """A used refresh token presented again within the grace period of concurrent use (and not expired)."""
    grace = state.settings.refresh_reuse_grace_sec
    now = datetime.now(UTC)
    return bool(grace > 0 and row["expires_at"] > now and now - row["used_at"] <= timedelta(seconds=grace))


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
