"""Who a viewer is and what they may see: authenticated like a REST request, vehicles decided by RLS.

A viewer presents the same credentials as the REST API (an access JWT, a personal API key or the static API
key), checked by the same code (`fleet.api.deps.principal_for` and `verify_session`), counted against the
same rate limit. What a viewer may see is what their tenant context shows: the vehicle stream asks for its
vehicle inside the viewer's transaction, and the fleet stream takes the set of vehicle ids visible in it.

Connections live for hours, so an account is checked again every `LIVE_ACCESS_REFRESH_SEC` (one query per
account, in the account's own tenant context, shared by all of its viewers in this process): a blocked
account, a logged-out session, a revoked key or a changed token version close the viewers concerned; a
vehicle granted or taken away changes what the fleet stream carries (and closes a vehicle stream with 4403).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.api.deps import Principal, enforce, principal_for, refuse_pending, verify_session
from fleet.api.errors import ApiError
from fleet.db import Tenant
from fleet.db.queries.live import viewer_access

if TYPE_CHECKING:
    from fleet.api.state import ApiState
    from fleet.db import Database
    from fleet.live.viewer import Viewer

# WebSocket close codes of the live streams (docs/LIVE.md).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_POLICY = 1008


class Refusal(Exception):
    """Why a viewer is turned away: the close code, the error code and message sent before closing."""

    def __init__(self, close_code: int, code: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message
        self.reason = reason  # label of fleet_ws_rejected_total


def refusal_from(err: ApiError) -> Refusal:
    """The WebSocket form of a REST error."""
    message = str(err.detail)
    if err.status_code == 401:
        reason = "token_expired" if err.code == "token_expired" else "unauthorized"
        return Refusal(CLOSE_UNAUTHORIZED, err.code, message, reason)
    if err.status_code == 403:
        return Refusal(CLOSE_FORBIDDEN, err.code, message, "forbidden")
    return Refusal(CLOSE_POLICY, err.code, message, "too_many_connections")  # 429: rate limited


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated viewer."""

    principal: Principal

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    @property
    def superuser(self) -> bool:
        return self.principal.is_superuser

    @property
    def expires_at(self) -> int | None:
        return self.principal.expires_at

    def same_account(self, other: Identity) -> bool:
        return (
            self.principal.user_id == other.principal.user_id and self.principal.role == other.principal.role
        )


async def authenticate(state: ApiState, token: str, address: str | None) -> Identity:
    """Check a token like a REST request does (signature, expiry, session, account, failures counted against
    the client's `address`); raise Refusal."""
    try:
        principal = await principal_for(state, token, address=address)
        await enforce(state, "api", principal.rate_key)
        async with state.db.tenant(principal.tenant) as conn:
            principal = await verify_session(conn, principal, state, address)
        refuse_pending(principal)
    except ApiError as err:
        raise refusal_from(err) from None
    return Identity(principal)


@dataclass(eq=False, slots=True)
class Audience:
    """One account's viewers in this process, and what the account may see (shared by those viewers)."""

    user_id: int | None  # None: the static API key (sees everything, nothing to re-check)
    superuser: bool
    visible: frozenset[int] | None = None  # None: every vehicle
    fleet: set[Viewer] = field(default_factory=set)
    vehicle: set[Viewer] = field(default_factory=set)
    refreshed_at: float = field(default_factory=time.monotonic)

    @property
    def viewers(self) -> list[Viewer]:
        return [*self.fleet, *self.vehicle]

    def sees(self, vehicle_id: int) -> bool:
        return self.visible is None or vehicle_id in self.visible


@dataclass(frozen=True, slots=True)
class Closing:
    """A viewer the access check turns away."""

    viewer: Viewer
    close_code: int
    code: str
    message: str
    reason: str


async def refresh(db: Database, audience: Audience) -> tuple[frozenset[int] | None, list[Closing]]:
    """Check an account again: the vehicles it sees now, and the viewers that must close."""
    audience.refreshed_at = time.monotonic()
    if audience.user_id is None:
        return None, []
    viewers = audience.viewers
    sessions = sorted({v.identity.principal.session_id for v in viewers if v.identity.principal.session_id})
    keys = sorted({v.identity.principal.api_key_id for v in viewers if v.identity.principal.api_key_id})
    tenant = Tenant.superuser(audience.user_id) if audience.superuser else Tenant.owner(audience.user_id)
    async with db.tenant(tenant) as conn:
        row = await viewer_access(
            conn, audience.user_id, sessions=sessions, api_keys=keys, with_vehicles=not audience.superuser
        )
    if row is None:
        return frozenset(), [
            _closing(v, CLOSE_UNAUTHORIZED, "token_revoked", "the account no longer exists") for v in viewers
        ]
    account = _account_refusal(row)
    if account is not None:
        return frozenset(), [_closing(v, *account) for v in viewers]
    visible = None if audience.superuser else frozenset(row["vehicles"] or ())
    ended = set(row["ended_sessions"] or ())
    revoked = set(row["revoked_keys"] or ())
    closing = []
    for viewer in viewers:
        principal = viewer.identity.principal
        if principal.role != row["role"] or (
            principal.kind == "jwt"
            and (principal.session_id in ended or principal.token_version != row["token_version"])
        ):
            closing.append(
                _closing(viewer, CLOSE_UNAUTHORIZED, "token_revoked", "this session has ended; sign in again")
            )
        elif principal.kind == "api_key" and principal.api_key_id in revoked:
            closing.append(
                _closing(viewer, CLOSE_UNAUTHORIZED, "invalid_api_key", "the API key has been revoked")
            )
        elif viewer.vehicle_id is not None and visible is not None and viewer.vehicle_id not in visible:
            closing.append(
                _closing(viewer, CLOSE_FORBIDDEN, "forbidden", "access to this vehicle was withdrawn")
            )
    return visible, closing


def _account_refusal(row: Any) -> tuple[int, str, str] | None:
    if row["status"] == "blocked":
        return CLOSE_FORBIDDEN, "account_blocked", "this account is blocked"
    if row["status"] == "pending":
        return CLOSE_FORBIDDEN, "pending_approval", "your account is awaiting approval"
    return None


def _closing(viewer: Viewer, close_code: int, code: str, message: str) -> Closing:
    reason = "unauthorized" if close_code == CLOSE_UNAUTHORIZED else "forbidden"
    return Closing(viewer, close_code, code, message, reason)
