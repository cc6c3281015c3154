"""`/api/audit`: the admin audit log (superusers only; RLS also hides it from everyone else)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from fleet.api.deps import AdminSession
from fleet.api.params import Pagination
from fleet.api.schemas import AuditEntry, Page, errors
from fleet.db.queries import audit

router = APIRouter(tags=["audit"])


@router.get(
    "/api/audit",
    response_model=Page[AuditEntry],
    responses=errors(401, 403, 429),
    summary="Audit log, newest first: admin actions, sign-ins, failed sign-ins, token creation and revocation",
)
async def audit_log(
    session: AdminSession,
    page: Pagination,
    action: str | None = Query(
        None, max_length=100, description="exact action (`user.approve`) or a prefix ending in '.' (`auth.`)"
    ),
    actor: str | None = Query(None, max_length=320, description="actor user id or e-mail"),
) -> dict[str, Any]:
    rows, total = await audit.list_entries(
        session.conn, limit=page.limit, offset=page.offset, action=action, actor=actor
    )
    return {
        "items": [dict(r) for r in rows],
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.offset + len(rows) < total,
    }
