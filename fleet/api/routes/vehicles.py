"""`/vehicles`: the fleet as the caller may see it, a vehicle's status and alarms, and its history.

Handlers never filter by owner: the session's tenant context does (RLS), so a vehicle of another owner
is simply absent — 404, exactly like a vehicle that does not exist.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal
from xml.sax.saxutils import escape

from fastapi import APIRouter, Query, Request, Response

from fleet.api.deps import ApiState, DbConn, HistoryConn, State
from fleet.api.errors import ApiError
from fleet.api.params import Bucket, HistoryPagination, PageLimit, PageOffset, Pagination, Range, VehicleId
from fleet.api.schemas import (
    AlarmPage,
    MeasurementPage,
    PositionPage,
    Vehicle,
    VehiclePage,
    VehicleStatus,
    errors,
)
from fleet.db.queries import events, history, vehicle_views
from fleet.db.queries.vehicles import require_vehicle

router = APIRouter(prefix="/vehicles", tags=["vehicles"])
READ_ERRORS = errors(400, 401, 403, 404, 429)
JSON = "application/json"


def json_response(body: bytes | str) -> Response:
    return Response(content=body, media_type=JSON)


@router.get(
    "",
    responses={200: {"model": VehiclePage}, **READ_ERRORS},
    summary="Vehicles visible to the caller (all for a superuser, assigned ones for an owner), with status",
)
async def list_vehicles(
    request: Request, conn: DbConn, limit: PageLimit = 100, offset: PageOffset = 0
) -> Response:
    # The most requested path: the state and the page come without dependencies of their own (the same
    # parameters and checks, in the same order: the session first).
    state: ApiState = request.app.state.api
    window = vehicle_views.online_window_sec(state.settings.sync_interval_sec)
    return json_response(
        await vehicle_views.vehicles_page(conn, window_sec=window, limit=limit, offset=offset)
    )


@router.get("/{vehicle_id}", responses={200: {"model": Vehicle}, **READ_ERRORS}, summary="One vehicle")
async def get_vehicle(vehicle_id: VehicleId, conn: DbConn, state: State) -> Response:
    window = vehicle_views.online_window_sec(state.settings.sync_interval_sec)
    body = await vehicle_views.vehicle_json(conn, vehicle_id, window_sec=window)
    if body is None:
        raise ApiError(404, "not_found", f"no vehicle {vehicle_id}")
    return json_response(body)


@router.get(
    "/{vehicle_id}/status",
    responses={200: {"model": VehicleStatus}, **READ_ERRORS},
    summary="online/offline/unknown, last activity and the last position",
    description=(
        "One rule for the API, the WebSocket and the web UI: a vehicle is online while a tracker sent "
        "(`last_device_seen_at`) or its Outbound API answered a pull (`last_seen_at`, unless its latest "
        "pull failed: `sync_status` = offline) within `online_window_sec` (3 sync intervals); offline "
        "otherwise; unknown when it never showed any sign of life."
    ),
)
async def vehicle_status(vehicle_id: VehicleId, conn: DbConn, state: State) -> Response:
    window = vehicle_views.online_window_sec(state.settings.sync_interval_sec)
    vehicle = await vehicle_views.vehicle_json(conn, vehicle_id, window_sec=window)
    if vehicle is None:
        raise ApiError(404, "not_found", f"no vehicle {vehicle_id}")
    position = await vehicle_views.last_position_json(conn, vehicle_id)
    status = json.loads(vehicle)["status"]
    return json_response(
        f'{{"vehicle":{vehicle},"status":"{status}","online_window_sec":{window},'
        f'"last_position":{position or "null"}}}'
    )


@router.get(
    "/{vehicle_id}/alarms",
    responses={200: {"model": AlarmPage}, **READ_ERRORS},
    summary="Alarms of a vehicle, from its Outbound API and its trackers: active ones, or all with ?all=1",
    description=(
        "Each alarm names its `source`: `vehicle` (pulled from the Outbound API, active until the vehicle "
        "reports it resolved) or `tracker` (an out-of-turn alarm record of a tracker; trackers report the "
        "moment only, so it counts as active for `tracker_alarm_active_sec` after it was raised)."
    ),
)
async def vehicle_alarms(
    vehicle_id: VehicleId,
    conn: DbConn,
    state: State,
    page: Pagination,
    include_all: Annotated[bool, Query(alias="all", description="include resolved alarms")] = False,
) -> Response:
    await require_vehicle(conn, vehicle_id)
    return json_response(
        await events.alarms_page(
            conn,
            vehicle_id,
            include_resolved=include_all,
            tracker_active_sec=state.settings.tracker_alarm_active_sec,
            limit=page.limit,
            offset=page.offset,
        )
    )


@router.get(
    "/{vehicle_id}/positions",
    responses={
        200: {
            "model": PositionPage,
            "content": {"text/csv": {}, "application/gpx+xml": {}},
            "description": "JSON page, or the same rows as CSV or GPX with ?format=",
        },
        **READ_ERRORS,
    },
    summary="Position history in a time range: JSON (optionally downsampled), CSV or GPX",
)
async def vehicle_positions(
    vehicle_id: VehicleId,
    conn: HistoryConn,
    span: Range,
    page: HistoryPagination,
    bucket: Bucket,
    fmt: Annotated[Literal["json", "csv", "gpx"], Query(alias="format")] = "json",
) -> Response:
    vehicle = await require_vehicle(conn, vehicle_id)
    if fmt == "json":
        return json_response(
            await history.positions_page(
                conn, vehicle_id, span.start, span.end, limit=page.limit, offset=page.offset, bucket=bucket
            )
        )
    if bucket is not None:
        raise ApiError(400, "invalid_input", "bucket applies to JSON answers only")
    filename = f"vehicle-{vehicle_id}-positions.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if fmt == "csv":
        body = await history.positions_csv(
            conn, vehicle_id, span.start, span.end, limit=page.limit, offset=page.offset
        )
        return Response(content=body, media_type="text/csv; charset=utf-8", headers=headers)
    points = await history.positions_gpx(
        conn, vehicle_id, span.start, span.end, limit=page.limit, offset=page.offset
    )
    gpx = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="Fleet Server" xmlns="http://www.topografix.com/GPX/1/1">\n'
        f"<trk><name>{escape(vehicle['name'])}</name><trkseg>\n{points}\n</trkseg></trk>\n</gpx>\n"
    )
    return Response(content=gpx, media_type="application/gpx+xml", headers=headers)


@router.get(
    "/{vehicle_id}/measurements",
    responses={200: {"model": MeasurementPage}, **READ_ERRORS},
    summary="Measurement history in a time range, per channel, optionally downsampled (avg/min/max)",
)
async def vehicle_measurements(
    vehicle_id: VehicleId,
    conn: HistoryConn,
    span: Range,
    page: HistoryPagination,
    bucket: Bucket,
    channel: Annotated[
        list[int] | None,
        Query(description="channel id; repeat for several", max_length=100),
    ] = None,
) -> Response:
    await require_vehicle(conn, vehicle_id)
    channels = channel or None
    if channels and any(not -(2**31) <= c < 2**31 for c in channels):
        raise ApiError(400, "invalid_input", "channel ids are 32-bit integers")
    return json_response(
        await history.measurements_page(
            conn,
            vehicle_id,
            span.start,
            span.end,
            channels=channels,
            limit=page.limit,
            offset=page.offset,
            bucket=bucket,
        )
    )
