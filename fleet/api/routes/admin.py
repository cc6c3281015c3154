"""`/admin`: registrations awaiting approval, approve/reject/block, assigning vehicles. Superusers only.

Each action runs in the superuser's own tenant context (the `users_guard` trigger accepts status changes
only there), is written to the audit log, and queues its e-mail in the same transaction.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query

from fleet.api.deps import AdminSession, ClientAddr, Session, State
from fleet.api.errors import ApiError
from fleet.api.params import Pagination, UserId, VehicleId
from fleet.api.schemas import AssignRequest, AssignResponse, Page, UserOut, errors
from fleet.db.queries import accounts, audit
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import get_user, get_user_by_email, grant_vehicle
from fleet.db.queries.vehicles import require_vehicle
from fleet.mail import messages

router = APIRouter(prefix="/admin", tags=["admin"])
ADMIN_ERRORS = errors(401, 403, 404, 409, 429)


def _page(rows: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {
        "items": [dict(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(rows) < total,
    }


@router.get(
    "/users/pending",
    response_model=Page[UserOut],
    responses=ADMIN_ERRORS,
    summary="Registrations awaiting approval, oldest first",
)
async def pending_users(session: AdminSession, page: Pagination) -> dict[str, Any]:
    rows, total = await accounts.list_users(
        session.conn, status="pending", limit=page.limit, offset=page.offset
    )
    return _page(rows, total, page.limit, page.offset)


@router.get("/users", response_model=Page[UserOut], responses=ADMIN_ERRORS, summary="All users")
async def list_users(
    session: AdminSession,
    page: Pagination,
    status: Literal["pending", "active", "blocked"] | None = Query(None),
) -> dict[str, Any]:
    rows, total = await accounts.list_users(session.conn, status=status, limit=page.limit, offset=page.offset)
    return _page(rows, total, page.limit, page.offset)


async def _audit(session: Session, action: str, target: str, address: str | None, **details: Any) -> None:
    await audit.record(
        session.conn,
        action=action,
        actor_id=session.principal.user_id,
        actor_email=session.principal.email or ("api_key" if session.principal.kind != "jwt" else None),
        target=target,
        details=details,
        client_addr=address,
    )


async def _user(session: Session, user_id: int) -> Any:
    user = await get_user(session.conn, user_id)
    if user is None:
        raise ApiError(404, "not_found", f"no user {user_id}")
    return user


@router.post(
    "/users/{user_id}/approve",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Activate a pending (or blocked) account; the owner gets an 'account activated' e-mail",
)
async def approve(
    user_id: UserId, session: AdminSession, state: State, address: ClientAddr, background: BackgroundTasks
) -> dict[str, Any]:
    user = await _user(session, user_id)
    if user["status"] == "active":
        raise ApiError(409, "conflict", f"user {user_id} is already active")
    updated = await accounts.set_status(
        session.conn, user_id, "active", actor_id=session.principal.user_id, bump_version=False
    )
    await messages.notify_activated(session.conn, state.settings, email=user["email"])
    await _audit(
        session, "user.approve", f"user:{user_id}", address, email=user["email"], previous=user["status"]
    )
    background.add_task(state.wake_mail)  # after the commit: the sender must see the message
    assert updated is not None  # the row was read in this transaction
    return dict(updated)


@router.post(
    "/users/{user_id}/reject",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Decline a pending registration (the account is kept, blocked, so the e-mail cannot re-register)",
)
async def reject(
    user_id: UserId, session: AdminSession, state: State, address: ClientAddr, background: BackgroundTasks
) -> dict[str, Any]:
    user = await _user(session, user_id)
    if user["status"] != "pending":
        raise ApiError(409, "conflict", f"user {user_id} is not pending (status {user['status']})")
    updated = await accounts.set_status(
        session.conn, user_id, "blocked", actor_id=session.principal.user_id, bump_version=True
    )
    await auth_q.revoke_user_sessions(session.conn, user_id)
    await messages.notify_rejected(session.conn, state.settings, email=user["email"])
    await _audit(session, "user.reject", f"user:{user_id}", address, email=user["email"])
    background.add_task(state.wake_mail)  # after the commit: the sender must see the message
    assert updated is not None  # the row was read in this transaction
    return dict(updated)


@router.post(
    "/users/{user_id}/block",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Block an account: every access and refresh token it holds stops working at once",
)
async def block(user_id: UserId, session: AdminSession, address: ClientAddr) -> dict[str, Any]:
    if user_id == session.principal.user_id:
        raise ApiError(409, "conflict", "you cannot block your own account")
    user = await _user(session, user_id)
    updated = await accounts.set_status(
        session.conn, user_id, "blocked", actor_id=session.principal.user_id, bump_version=True
    )
    revoked = await auth_q.revoke_user_sessions(session.conn, user_id)
    await _audit(
        session,
        "user.block",
        f"user:{user_id}",
        address,
        email=user["email"],
        previous=user["status"],
        sessions_revoked=revoked,
    )
    assert updated is not None  # the row was read in this transaction
    return dict(updated)


@router.post(
    "/vehicles/{vehicle_id}/assign",
    response_model=AssignResponse,
    responses={**ADMIN_ERRORS, **errors(422)},
    summary="Give a user access to a vehicle (by user id or e-mail)",
)
async def assign(
    vehicle_id: VehicleId, body: AssignRequest, session: AdminSession, address: ClientAddr
) -> dict[str, Any]:
    await require_vehicle(session.conn, vehicle_id)
    if body.user_id is not None:
        user = await _user(session, body.user_id)
    else:
        assert body.email is not None
        user = await get_user_by_email(session.conn, body.email)
        if user is None:
            raise ApiError(404, "not_found", f"no user with e-mail {body.email}")
    granted = await grant_vehicle(
        session.conn, user_id=user["id"], vehicle_id=vehicle_id, granted_by=session.principal.user_id
    )
    await _audit(
        session,
        "vehicle.assign",
        f"vehicle:{vehicle_id}",
        address,
        user_id=user["id"],
        email=user["email"],
        granted=granted,
    )
    return {"vehicle_id": vehicle_id, "user_id": user["id"], "email": user["email"], "granted": granted}
