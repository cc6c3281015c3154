"""Dependencies: who is calling, from where, how often, and the tenant-context connection they get.

Every authenticated handler receives its connection from `open_session`, which opens the request's one
transaction *as the caller* (`Tenant.owner(uid)` or `Tenant.superuser(uid)`), so row-level security
filters every query the handler runs, whatever the handler forgets. In the same transaction the caller's
access token is checked against the database (token version, session revocation, account status):
blocking a user or logging a session out takes effect on the next request.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from fleet.api.errors import ApiError
from fleet.api.state import ApiState
from fleet.auth import tokens
from fleet.db import Tenant
from fleet.db.queries import auth as auth_q
from fleet.errors import DatabaseUnavailable
from fleet.manage.actor import Actor
from fleet.ops.metrics_http import AUTH_FAILURES

log = structlog.get_logger(__name__)

READ_REPLICA_FALLBACKS = Counter(
    "fleet_db_read_replica_fallbacks_total",
    "History reads answered by the primary because the read replica (DATABASE_READ_URL) failed",
)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description=(
        "An access token from `POST /auth/login` (JWT, 15 minutes), a personal API key "
        "(`flt_<prefix>_<secret>` from `POST /auth/api-keys`) or the server's static `API_KEY`."
    ),
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


async def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]


def resolve_client_address(peer: str | None, forwarded_for: str | None, state: ApiState) -> str | None:
    """The client's address: the socket peer, or X-Forwarded-For when the peer is a trusted proxy.

    X-Forwarded-For is read right to left, skipping trusted proxies, so a client cannot choose its own
    address by sending the header itself.
    """
    if peer is None:
        return None
    if not forwarded_for or not _trusted(peer, state):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain is not trusted at all
        if not _trusted(hop, state):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, state: ApiState) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in state.trusted_proxies)


async def client_address(request: Request) -> str | None:
    peer = request.client.host if request.client else None
    return resolve_client_address(peer, request.headers.get("x-forwarded-for"), request.app.state.api)


def reached_over_https(request: Request, state: ApiState) -> bool:
    """True when the client reached us over HTTPS: directly, or per `X-Forwarded-Proto` of a trusted proxy."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    if peer is None or not _trusted(peer, state):
        return False
    proto = request.headers.get("x-forwarded-proto", "")
    # A chain of proxies appends; the nearest (trusted) one speaks last.
    return proto.rsplit(",", 1)[-1].strip().lower() == "https"


ClientAddr = Annotated[str | None, Depends(client_address)]


def rate_limit(scope: str) -> Any:
    """A dependency counting the request against the `scope` limit of the client's address."""

    async def check(request: Request, state: State, address: ClientAddr) -> None:
        await enforce(state, scope, address or "unknown")

    return Depends(check)


async def enforce(state: ApiState, scope: str, key: str) -> None:
    decision = await state.limiter.hit(scope, key)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests; retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: int | None
    role: Literal["superuser", "owner"]
    kind: Literal["jwt", "api_key", "static_key"]
    status: str = "active"
    email: str | None = None
    session_id: str | None = None
    token_version: int | None = None
    api_key_id: int | None = None
    expires_at: int | None = None  # epoch seconds (access tokens only)

    @property
    def tenant(self) -> Tenant:
        if self.user_id is None:
            return Tenant.system()
        if self.role == "superuser":
            return Tenant.superuser(self.user_id)
        return Tenant.owner(self.user_id)

    @property
    def is_superuser(self) -> bool:
        return self.role == "superuser"

    @property
    def rate_key(self) -> str:
        if self.kind == "api_key":
            return f"key:{self.api_key_id}"
        if self.kind == "static_key":
            return "static"
        return f"user:{self.user_id}"


def actor_for(principal: Principal, address: str | None) -> Actor:
    """The caller as the actor of a management use case (for its checks and its audit entry)."""
    email = principal.email or ("static API_KEY" if principal.kind == "static_key" else None)
    return Actor(user_id=principal.user_id, email=email, role=principal.role, client_addr=address)


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers=UNAUTHORIZED_HEADERS)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    address: ClientAddr,
) -> Principal:
    """Identify the caller from `Authorization: Bearer …` and count the request against their API limit."""
    return await _caller(request, request.app.state.api, credentials, address)


async def _caller(
    request: Request,
    state: ApiState,
    credentials: HTTPAuthorizationCredentials | None,
    address: str | None,
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("unauthorized", "sign in: send 'Authorization: Bearer <token or API key>'")
    principal = await principal_for(state, credentials.credentials, address=address)
    await enforce(state, "api", principal.rate_key)
    request.state.client_address = address  # open_session counts revoked tokens against the same address
    return principal


# Failures that say nothing about guessing: an expired token was genuine when it was issued.
_NOT_COUNTED = frozenset({"token_expired"})


async def auth_failed(state: ApiState, address: str | None, error: ApiError, kind: str) -> ApiError:
    """Count a failed authentication against the client's address; the error to raise (429 once over).

    Bad bearer tokens and API keys are limited per address (`RATE_LIMIT_AUTH_FAILURES_PER_MINUTE`), so a
    client cannot try credentials at the speed of the API; an address over the limit is refused at once,
    before any lookup, until its window has room again.
    """
    if error.code in _NOT_COUNTED:
        return error
    AUTH_FAILURES.labels(kind).inc()
    key = address or "unknown"
    decision = await state.limiter.hit("auth_failure", key)
    if decision.allowed:
        return error
    state.auth_blocked.block(key, decision.retry_after)
    return _too_many_failures(decision.retry_after)


def _too_many_failures(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many failed authentications from this address; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


async def principal_for(state: ApiState, token: str, *, address: str | None = None) -> Principal:
    """Resolve a bearer credential (access JWT, personal API key or the static API key).

    With the client's `address`, failures are counted and limited per address (see `auth_failed`); callers
    that authenticate outside HTTP dependencies (WebSockets) should pass it too.
    """
    if address is not None:
        retry = state.auth_blocked.retry_after(address)
        if retry:
            raise _too_many_failures(retry)
    try:
        return await _resolve(state, token)
    except ApiError as err:
        raise await auth_failed(state, address, err, _failure_kind(token)) from None


def _failure_kind(token: str) -> str:
    return "api_key" if tokens.api_key_prefix(token) is not None else "token"


async def _resolve(state: ApiState, token: str) -> Principal:
    settings = state.settings
    static = settings.api_key.get_secret_value() if settings.api_key else None
    if static and tokens.same_secret(token, static):
        return Principal(user_id=None, role="superuser", kind="static_key", email=None)
    prefix = tokens.api_key_prefix(token)
    if prefix is not None:
        async with state.db.system() as conn:
            row = await auth_q.lookup_api_key(conn, prefix)
            if row is None or not tokens.same_secret(tokens.sha256_hex(token), row["key_hash"]):
                raise _unauthorized("invalid_api_key", "the API key is not valid or has been revoked")
            await auth_q.touch_api_key(conn, row["id"])
        return Principal(
            user_id=row["user_id"],
            role=row["role"],
            kind="api_key",
            status=row["status"],
            email=row["email"],
            api_key_id=row["id"],
        )
    assert settings.secret_key is not None, "settings are finalised with a SECRET_KEY"
    try:
        claims = tokens.decode_access_token(settings.secret_key.get_secret_value(), token)
    except tokens.TokenError as err:
        raise _unauthorized(err.code, err.message) from err
    return Principal(
        user_id=claims.user_id,
        role="superuser" if claims.role == "superuser" else "owner",
        kind="jwt",
        status="unknown",
        session_id=claims.session_id,
        token_version=claims.token_version,
        expires_at=claims.expires_at,
    )


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated request: its caller and its tenant-context connection (one transaction)."""

    principal: Principal
    conn: asyncpg.Connection


async def verify_session(
    conn: asyncpg.Connection, principal: Principal, state: ApiState, address: str | None
) -> Principal:
    """Check in the caller's transaction that their token is still good; return them with their status.

    Shared by every request and by the WebSocket streams (fleet.live), so both refuse the same callers; a
    revoked token counts as a failed authentication of `address`.
    """
    if principal.kind == "jwt":
        assert principal.user_id is not None and principal.session_id is not None
        row = await auth_q.session_state(conn, principal.user_id, principal.session_id)
        if (
            row is None
            or not row["session_known"]  # the `sid` must be a session of this very user
            or row["session_revoked"]
            or row["token_version"] != principal.token_version
            or row["role"] != principal.role
        ):
            error = _unauthorized("token_revoked", "this session has ended; sign in again")
            raise await auth_failed(state, address, error, "revoked")
        principal = replace(principal, status=row["status"], email=row["email"])
    if principal.status == "blocked":
        raise ApiError(403, "account_blocked", "this account is blocked")
    return principal


async def open_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> AsyncIterator[Session]:
    """Identify the caller (as `authenticate`), open the request's transaction as them and verify that their
    token is still good.

    `authenticate` and `client_address` are called here rather than declared as sub-dependencies: the
    same checks in the same order, with two fewer dependencies for FastAPI to resolve on every request.
    """
    state: ApiState = request.app.state.api
    address = await client_address(request)
    principal = await _caller(request, state, credentials, address)
    async with state.db.tenant(principal.tenant) as conn:
        yield Session(await verify_session(conn, principal, state, address), conn)


# One Depends object: every alias below shares the same (cached) session in a request, and its
# transaction ends when the handler returns, before the response is sent.
_SESSION = Depends(open_session, scope="function")
AnySession = Annotated[Session, _SESSION]


def refuse_pending(principal: Principal) -> None:
    """403 `pending_approval` for an account an administrator has not approved yet."""
    if principal.status == "pending":
        raise ApiError(
            403,
            "pending_approval",
            "your account is awaiting approval by an administrator; you will get an e-mail when it is activated",
        )


def _refuse_pending(session: Session) -> None:
    refuse_pending(session.principal)


async def require_active(session: AnySession) -> Session:
    _refuse_pending(session)
    return session


ActiveSession = Annotated[Session, Depends(require_active)]


async def require_superuser(session: ActiveSession) -> Session:
    if not session.principal.is_superuser:
        raise ApiError(403, "forbidden", "this operation needs a superuser")
    return session


AdminSession = Annotated[Session, Depends(require_superuser)]


# These two depend on the session directly (not through `require_active`): one level less of dependency
# resolution on the hottest paths, same check.
async def _active_conn(session: AnySession) -> asyncpg.Connection:
    _refuse_pending(session)
    return session.conn


async def _active_user(session: AnySession) -> Principal:
    _refuse_pending(session)
    return session.principal


DbConn = Annotated[asyncpg.Connection, Depends(_active_conn)]
CurrentUser = Annotated[Principal, Depends(_active_user)]


async def open_history_session(
    request: Request, principal: Annotated[Principal, Depends(authenticate)]
) -> AsyncIterator[asyncpg.Connection]:
    """The connection of a read-only history handler: on the read replica when DATABASE_READ_URL is set.

    The token is verified on the primary first (a logout or a block must take effect at once, and the
    replica may lag), in a short transaction that ends before the replica's opens, so a request holds one
    connection at a time. The replica's transaction carries the same tenant context (READ ONLY): the RLS
    policies replicate with the schema. Without a replica this is exactly `DbConn`'s one transaction.
    """
    state: ApiState = request.app.state.api
    address = getattr(request.state, "client_address", None)
    if state.read_db is None:
        async with state.db.tenant(principal.tenant) as conn:
            refuse_pending(await verify_session(conn, principal, state, address))
            yield conn
        return
    async with state.db.tenant(principal.tenant) as conn:
        verified = await verify_session(conn, principal, state, address)
    refuse_pending(verified)
    async with AsyncExitStack() as stack:
        try:
            conn = await stack.enter_async_context(state.read_db.tenant(verified.tenant, readonly=True))
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            DatabaseUnavailable,
        ) as err:
            # A replica that is down or restarting must not take history down: the primary answers.
            _replica_failed(err)
            conn = await stack.enter_async_context(state.db.tenant(verified.tenant, readonly=True))
        yield conn


_replica_warned_at = 0.0
REPLICA_WARN_EVERY_SEC = 60.0


def _replica_failed(err: BaseException) -> None:
    """Count a fallback to the primary; log at most once a minute (every history request would)."""
    global _replica_warned_at
    READ_REPLICA_FALLBACKS.inc()
    now = time.monotonic()
    if now - _replica_warned_at >= REPLICA_WARN_EVERY_SEC:
        _replica_warned_at = now
        log.warning("read_replica_unavailable", error=str(err) or type(err).__name__, fallback="primary")


# History, exports and latest values (positions, measurements, telemetry, CAN, raw frames, events): reads
# that tolerate a replica's lag of a fraction of a second. Anything that writes, or must see its own
# writes, takes `DbConn` (the primary).
HistoryConn = Annotated[asyncpg.Connection, Depends(open_history_session, scope="function")]


def ensure_registration_open(state: ApiState) -> None:
    """Refuse new accounts while the `registration_open` flag is off (existing accounts still sign in)."""
    if not state.settings.registration_open:
        raise ApiError(403, "registration_closed", "registration of new accounts is closed on this server")
