"""The device API of seed 000: `/api/v1` (deprecated), `/api/v2`, and the README's `/api/devices` aliases.

`{device_id}` takes the numeric id or the IMEI. Answers come from the caller's tenant context: an owner
sees the trackers of their vehicles, a superuser (or the static API_KEY) every tracker. v1 answers carry
`Deprecation` and `Sunset` headers (RFC 9745 / RFC 8594) pointing to v2.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

import fleet
from fleet.api.deps import CurrentUser, DbConn, HistoryConn, State
from fleet.api.errors import ApiError
from fleet.api.params import DeviceRange, DeviceRefParam, Pagination
from fleet.api.schemas import CanPage, DeviceLast, Page, RawFrame, Stats, TelemetryPage, errors
from fleet.api.schemas import Device as DeviceModel
from fleet.db.queries import device_api as devices_q
from fleet.db.queries import vehicle_views

DEPRECATED_SINCE = datetime(2026, 1, 1, tzinfo=UTC)
SUNSET_AT = datetime(2027, 7, 1, tzinfo=UTC)
V1_HEADERS = {
    "Deprecation": f"@{int(DEPRECATED_SINCE.timestamp())}",
    "Sunset": SUNSET_AT.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    "Link": '</api/v2/devices>; rel="successor-version"',
}
LATEST_CAN_LOOKBACK = timedelta(days=7)
READ_ERRORS = errors(400, 401, 403, 404, 429)
JSON = "application/json"

Newest = Annotated[Literal["desc", "asc"], Query(alias="order", description="desc: newest first")]
Outcome = Annotated[Literal["ok", "rejected", "error", "ignored"] | None, Query(description="decode outcome")]


def _window(state: Any) -> float:
    return vehicle_views.online_window_sec(state.settings.sync_interval_sec)


async def _device(conn: Any, ref: str) -> Any:
    row = await devices_q.resolve_device(conn, ref)
    if row is None:
        raise ApiError(404, "not_found", f"no device {ref}")
    return row


def _health_body(request: Request, api_version: str) -> dict[str, Any]:
    return {
        "status": "ok",
        "api_version": api_version,
        "version": fleet.__version__,
        "time": datetime.now(UTC).isoformat(),
        "roles": request.app.state.api.runtime.roles,
    }


def build_router(version: Literal["v1", "v2"]) -> APIRouter:
    """The device endpoints of one API version."""
    deprecated = version == "v1"
    router = APIRouter(prefix=f"/api/{version}", tags=[f"device api {version}"], deprecated=deprecated)

    def answer(body: bytes | str, media_type: str = JSON) -> Response:
        # v1's Deprecation/Sunset headers are added by fleet.api.middleware.DeprecationHeaders.
        return Response(content=body, media_type=media_type)

    @router.get("/health", summary=f"API {version} health (no credentials needed)")
    async def health(request: Request) -> Response:
        import json

        db_ok = await request.app.state.api.db.ping()
        body = _health_body(request, version)
        body["database"] = "ok" if db_ok else "unavailable"
        if not db_ok:
            body["status"] = "degraded"
        response = answer(json.dumps(body))
        response.status_code = 200 if db_ok else 503
        return response

    @router.get("/devices", responses={200: {"model": Page[DeviceModel]}, **READ_ERRORS}, summary="Trackers")
    async def devices(conn: DbConn, state: State, page: Pagination) -> Response:
        return answer(
            await devices_q.devices_page(
                conn, window_sec=_window(state), limit=page.limit, offset=page.offset
            )
        )

    @router.get(
        "/devices/{device_id}/telemetry",
        responses={200: {"model": TelemetryPage}, **READ_ERRORS},
        summary="Positions of a tracker (default: last 7 days, newest first)",
    )
    async def telemetry(
        device_id: DeviceRefParam,
        conn: HistoryConn,
        span: DeviceRange,
        page: Pagination,
        order: Newest = "desc",
    ) -> Response:
        device = await _device(conn, device_id)
        return answer(
            await devices_q.telemetry_page(
                conn,
                device["id"],
                span.start,
                span.end,
                newest_first=order == "desc",
                limit=page.limit,
                offset=page.offset,
            )
        )

    @router.get(
        "/devices/{device_id}/raw-frames",
        responses={200: {"model": Page[RawFrame]}, **READ_ERRORS},
        summary="Frames received from a tracker, as hex (default: last 7 days, newest first)",
    )
    async def device_raw_frames(
        device_id: DeviceRefParam,
        conn: HistoryConn,
        span: DeviceRange,
        page: Pagination,
        outcome: Outcome = None,
    ) -> Response:
        device = await _device(conn, device_id)
        return answer(
            await devices_q.raw_frames_page(
                conn,
                device["id"],
                span.start,
                span.end,
                outcome=outcome,
                limit=page.limit,
                offset=page.offset,
            )
        )

    if deprecated:
        return router

    @router.get(
        "/stats",
        response_model=Stats,
        responses=READ_ERRORS,
        summary="Counts of what the caller sees; superusers also get the live ingest figures",
    )
    async def stats(conn: DbConn, state: State, user: CurrentUser) -> dict[str, Any]:
        body: dict[str, Any] = await devices_q.stats(conn, window_sec=_window(state))
        live = state.runtime.extras.get("ingest_stats")
        # The ingest counters are server-wide (every tracker of every owner): superusers only.
        if user.is_superuser and callable(live):
            try:
                body["ingest"] = dict(live())
            except Exception as err:  # a broken provider must not break the stats page
                body["ingest"] = {"error": str(err)}
        return body

    @router.get(
        "/devices/{device_id}/can-data",
        responses={200: {"model": CanPage}, **READ_ERRORS},
        summary="Decoded CAN signals of a tracker (default: last 7 days, newest first)",
    )
    async def can_data(
        device_id: DeviceRefParam,
        conn: HistoryConn,
        span: DeviceRange,
        page: Pagination,
        name: Annotated[str | None, Query(max_length=200, description="only this signal")] = None,
    ) -> Response:
        device = await _device(conn, device_id)
        return answer(
            await devices_q.can_page(
                conn, device["id"], span.start, span.end, name=name, limit=page.limit, offset=page.offset
            )
        )

    @router.get(
        "/raw-frames",
        responses={200: {"model": Page[RawFrame]}, **READ_ERRORS},
        summary="Frames from every visible tracker (default: last 7 days, newest first)",
    )
    async def raw_frames(
        conn: HistoryConn, span: DeviceRange, page: Pagination, outcome: Outcome = None
    ) -> Response:
        return answer(
            await devices_q.raw_frames_page(
                conn, None, span.start, span.end, outcome=outcome, limit=page.limit, offset=page.offset
            )
        )

    return router


aliases = APIRouter(prefix="/api/devices", tags=["device api (README aliases)"])


@aliases.get(
    "", responses={200: {"model": Page[DeviceModel]}, **READ_ERRORS}, summary="Trackers (= /api/v2/devices)"
)
async def alias_devices(conn: DbConn, state: State, page: Pagination) -> Response:
    return Response(
        await devices_q.devices_page(conn, window_sec=_window(state), limit=page.limit, offset=page.offset),
        media_type=JSON,
    )


@aliases.get(
    "/{imei}/last",
    responses={200: {"model": DeviceLast}, **READ_ERRORS},
    summary="Last position of a tracker and the latest value of each CAN signal",
)
async def alias_last(imei: DeviceRefParam, conn: HistoryConn) -> Response:
    device = await _device(conn, imei)
    position = await devices_q.last_position_json(conn, device["id"])
    can = await devices_q.latest_can_json(conn, device["id"], datetime.now(UTC) - LATEST_CAN_LOOKBACK)
    body = (
        f'{{"device":{{"id":{device["id"]},"imei":"{device["imei"]}"}},'
        f'"position":{position or "null"},"can":{can}}}'
    )
    return Response(body, media_type=JSON)


@aliases.get(
    "/{imei}/can",
    responses={200: {"model": CanPage}, **READ_ERRORS},
    summary="CAN signals of a tracker (= /api/v2/devices/{device_id}/can-data)",
)
async def alias_can(imei: DeviceRefParam, conn: HistoryConn, span: DeviceRange, page: Pagination) -> Response:
    device = await _device(conn, imei)
    return Response(
        await devices_q.can_page(
            conn, device["id"], span.start, span.end, name=None, limit=page.limit, offset=page.offset
        ),
        media_type=JSON,
    )
