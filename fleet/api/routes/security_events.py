"""`/admin/security-events`: what the device port refused to protect trackers' identities (superusers only).

Kinds: ``takeover_refused`` (a connection claimed a tracker that was online from another address and had
not been silent for INGEST_TAKEOVER_SILENCE_SEC) and ``device_address_refused`` (a tracker connected from
outside its allowed networks). Attempts of one kind, tracker and address within a few seconds are one entry
with a ``count``. RLS hides the table from everyone but superusers too (docs/SECURITY.md, "Device port").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fleet.api.deps import AdminSession
from fleet.api.params import BIGINT_MAX, Pagination
from fleet.api.routes.admin import page_body
from fleet.api.schemas import Page, errors
from fleet.db.queries import security_events

router = APIRouter(tags=["admin"])

Kind = Literal["takeover_refused", "device_address_refused"]


class SecurityEvent(BaseModel):
    id: int
    kind: str = Field(examples=["takeover_refused"])
    first_at: datetime
    last_at: datetime
    count: int = Field(description="attempts of this kind, tracker and address between first_at and last_at")
    device_id: int | None
    imei: str | None
    protocol: str | None
    peer: str | None = Field(
        description="address:port of the refused connection", examples=["203.0.113.9:40312"]
    )
    details: dict[str, Any] = Field(
        description="address key, and for a takeover the online connection's peer and how long it was silent"
    )


@router.get(
    "/admin/security-events",
    response_model=Page[SecurityEvent],
    responses=errors(401, 403, 422, 429),
    summary="Device-port security events, newest first: refused takeovers, trackers outside their allow-list",
)
async def list_security_events(
    session: AdminSession,
    page: Pagination,
    kind: Annotated[Kind | None, Query()] = None,
    device_id: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
    imei: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
) -> dict[str, Any]:
    rows, total = await security_events.list_events(
        session.conn, limit=page.limit, offset=page.offset, kind=kind, device_id=device_id, imei=imei
    )
    return page_body(rows, total, page.limit, page.offset)
