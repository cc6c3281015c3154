"""`/admin/users`: registrations awaiting approval, approve/reject/block/unblock, password resets. Superusers only.

Each action runs in the superuser's own tenant context (the `users_guard` trigger accepts status changes
only there) through the use cases of `fleet.manage.users`, which write the audit entry and queue the e-mail
in the same transaction.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query

from fleet.api.deps import AdminSession, ClientAddr, State, actor_for
from fleet.api.manage_schemas import PasswordReset
from fleet.api.params import Pagination, UserId
from fleet.api.schemas import Page, UserOut, errors
from fleet.db.queries import accounts
from fleet.manage import users

router = APIRouter(prefix="/admin", tags=["admin"])
ADMIN_ERRORS = errors(401, 403, 404, 409, 429)


def page_body(rows: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
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
    return page_body(rows, total, page.limit, page.offset)


@router.get("/users", response_model=Page[UserOut], responses=ADMIN_ERRORS, summary="All users")
async def list_users(
    session: AdminSession,
    page: Pagination,
    status: Literal["pending", "active", "blocked"] | None = Query(None),
) -> dict[str, Any]:
    rows, total = await accounts.list_users(session.conn, status=status, limit=page.limit, offset=page.offset)
    return page_body(rows, total, page.limit, page.offset)


@router.post(
    "/users/{user_id}/approve",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Activate a pending (or blocked) account; the owner gets an 'account activated' e-mail",
)
async def approve(
    user_id: UserId, session: AdminSession, state: State, address: ClientAddr, background: BackgroundTasks
) -> dict[str, Any]:
    updated = await users.approve(
        session.conn, actor_for(session.principal, address), state.settings, user_id
    )
    background.add_task(state.wake_mail)  # after the commit: the sender must see the message
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
    updated = await users.reject(session.conn, actor_for(session.principal, address), state.settings, user_id)
    background.add_task(state.wake_mail)
    return dict(updated)


@router.post(
    "/users/{user_id}/block",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Block an account: its access tokens, refresh tokens and API keys stop working at once, for good",
    description=(
        "Every session and every API key of the user is revoked. Unblocking (or approving) the account later "
        "does not bring them back: the user signs in again and creates new keys."
    ),
)
async def block(user_id: UserId, session: AdminSession, address: ClientAddr) -> dict[str, Any]:
    return dict(await users.block(session.conn, actor_for(session.principal, address), user_id))


@router.post(
    "/users/{user_id}/unblock",
    response_model=UserOut,
    responses=ADMIN_ERRORS,
    summary="Give a blocked account back (status active); its revoked sessions and API keys stay revoked",
)
async def unblock(user_id: UserId, session: AdminSession, address: ClientAddr) -> dict[str, Any]:
    return dict(await users.unblock(session.conn, actor_for(session.principal, address), user_id))


@router.post(
    "/users/{user_id}/password",
    response_model=UserOut,
    responses={**ADMIN_ERRORS, **errors(400, 422)},
    summary="Set another user's password (the password policy applies); their sessions end, they get an e-mail",
)
async def reset_password(
    user_id: UserId,
    body: PasswordReset,
    session: AdminSession,
    state: State,
    address: ClientAddr,
    background: BackgroundTasks,
) -> dict[str, Any]:
    user = await users.reset_password(
        session.conn, actor_for(session.principal, address), state.settings, user_id, body.password
    )
    background.add_task(state.wake_mail)
    return dict(user)
