"""Tracker events: `GET /vehicles/{id}/events` and `GET /api/v2/devices/{device_id}/events`.

Same tenant rules as positions: the caller's transaction shows an owner only the events of their vehicles
(RLS), so another owner's vehicle or tracker answers 404 like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from fleet.api.deps import HistoryConn
from fleet.api.errors import ApiError
from fleet.api.params import DeviceRange, DeviceRefParam, PageParams, Pagination, Range, TimeRange, VehicleId
from fleet.api.schemas import EventPage, errors
from fleet.db.queries import device_api as devices_q
from fleet.db.queries import events as events_q
from fleet.db.queries.vehicles import require_vehicle

READ_ERRORS = errors(400, 401, 403, 404, 429)
EVENTS_DESCRIPTION = (
    "What trackers reported as events: out-of-turn alarm records (`kind` = `alarm`, NTCB `~T`), FLEX 2.0 "
    "extra records (`extra`, `~E`/`~X`, with their own fix and items in `details`) and text events (`text`). "
    "`latitude`/`longitude` are the event's fix: an extra record's own, an alarm's from the position that "
    "came with it."
)

Kind = Annotated[Literal["alarm", "extra", "text"] | None, Query(description="only events of this kind")]
Order = Annotated[Literal["desc", "asc"], Query(alias="order", description="desc: newest first")]

vehicle_router = APIRouter(prefix="/vehicles", tags=["vehicles"])
device_router = APIRouter(prefix="/api/v2", tags=["device api v2"])


async def _page(
    conn: Any, span: TimeRange, page: PageParams, kind: str | None, order: str, **owner: int
) -> Response:
    body = await events_q.events_page(
        conn,
        start=span.start,
        end=span.end,
        kind=kind,
        newest_first=order == "desc",
        limit=page.limit,
        offset=page.offset,
        **owner,
    )
    return Response(content=body, media_type="application/json")


@vehicle_router.get(
    "/{vehicle_id}/events",
    responses={200: {"model": EventPage}, **READ_ERRORS},
    summary="Tracker events of a vehicle in a time range (default: the last 24 h, newest first)",
    description=EVENTS_DESCRIPTION,
)
async def vehicle_events(
    vehicle_id: VehicleId,
    conn: HistoryConn,
    span: Range,
    page: Pagination,
    kind: Kind = None,
    order: Order = "desc",
) -> Response:
    await require_vehicle(conn, vehicle_id)
    return await _page(conn, span, page, kind, order, vehicle_id=vehicle_id)


@device_router.get(
    "/devices/{device_id}/events",
    responses={200: {"model": EventPage}, **READ_ERRORS},
    summary="Events of a tracker (default: the last 7 days, newest first)",
    description=EVENTS_DESCRIPTION,
)
async def device_events(
    device_id: DeviceRefParam,
    conn: HistoryConn,
    span: DeviceRange,
    page: Pagination,
    kind: Kind = None,
    order: Order = "desc",
) -> Response:
    device = await devices_q.resolve_device(conn, device_id)
    if device is None:
        raise ApiError(404, "not_found", f"no device {device_id}")
    return await _page(conn, span, page, kind, order, device_id=device["id"])
