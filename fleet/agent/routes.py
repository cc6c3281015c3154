"""The read side of the Outbound API: /status, /channels, /data, /data/latest, /alarms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from fleet.agent.config import CONTRACT_VERSION, FaultEndpoint, FaultMode
from fleet.agent.deps import Runtime, fault_gate
from fleet.agent.errors import BadRequest, StoreUnavailable
from fleet.agent.faults import FaultSettings
from fleet.agent.render import render_data_page, render_rows
from fleet.agent.runtime import AgentRuntime
from fleet.agent.store import Alarm
from fleet.agent.times import TimeFormatError, format_time, now_ms, parse_time

router = APIRouter()

From = Annotated[str | None, Query(alias="from", description="Window start (inclusive): ISO-8601 or epoch s")]
To = Annotated[
    str | None, Query(description="Window end (exclusive): ISO-8601 or epoch s; default: the horizon")
]
Limit = Annotated[int | None, Query(ge=1, description="Rows per page, at most the agent's row limit")]


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open window ``[start, end)`` in epoch ms, its end already held back to the settle horizon."""

    start: int
    end: int


def resolve_window(runtime: AgentRuntime, from_text: str | None, to_text: str | None) -> Window:
    """Validate ``from``/``to`` and clamp the end to what the agent can answer completely."""
    if from_text is None:
        raise BadRequest("missing_parameter", "query parameter 'from' is required")
    start = _parse(from_text, "from")
    now = now_ms()
    # Without "to" the window runs to the horizon; from a start beyond it, it is empty rather than reversed.
    end = _parse(to_text, "to") if to_text is not None else max(start, now)
    if start > end:
        raise BadRequest("invalid_window", "'from' is later than 'to'")
    config = runtime.config
    if end - start > config.max_window_ms:
        raise BadRequest(
            "window_too_large",
            f"the window is wider than {config.max_window_ms // 1000} s; split it into smaller windows",
        )
    # Rows are written moments after their time; answering only up to now - settle means a window the server
    # has pulled can never gain a row later.
    horizon = now - int(config.settle_seconds * 1000)
    return Window(start, max(start, min(end, horizon)))


def _parse(text: str, name: str) -> int:
    try:
        return parse_time(text)
    except TimeFormatError as err:
        raise BadRequest("invalid_time", f"'{name}': {err}") from err


@router.get("/status")
async def status(
    runtime: Runtime, _: Annotated[FaultSettings | None, Depends(fault_gate(FaultEndpoint.STATUS))]
) -> dict[str, Any]:
    """Report that the vehicle is online, its versions, database health and the span of buffered data."""
    config = runtime.config
    try:
        oldest, newest = await runtime.store.data_span()
        db_ok = True
    except StoreUnavailable:
        oldest = newest = None
        db_ok = False
    return {
        "online": True,
        "software_version": config.software_version,
        "contract_version": CONTRACT_VERSION,
        "db_ok": db_ok,
        "time": format_time(now_ms()),
        "vehicle_id": config.vehicle_id,
        "vehicle_name": config.vehicle_name,
        "oldest_data": format_time(oldest) if oldest is not None else None,
        "newest_data": format_time(newest) if newest is not None else None,
        "simulated": config.simulate,
        "limits": {
            "row_limit": config.row_limit,
            "alarm_limit": config.alarm_limit,
            "max_window_seconds": config.max_window_ms // 1000,
            "settle_seconds": config.settle_seconds,
        },
    }


@router.get("/channels")
async def channels(
    runtime: Runtime, _: Annotated[FaultSettings | None, Depends(fault_gate(FaultEndpoint.CHANNELS))]
) -> dict[str, Any]:
    """List the vehicle's channels with units and physical ranges."""
    return {"channels": [channel.as_json() for channel in await runtime.store.channels()]}


@router.get("/data")
async def data(
    runtime: Runtime,
    fault: Annotated[FaultSettings | None, Depends(fault_gate(FaultEndpoint.DATA))],
    from_: From = None,
    to: To = None,
    limit: Limit = None,
) -> Response:
    """Return the samples of a half-open window, ordered by time then channel, at most one page of them."""
    window = resolve_window(runtime, from_, to)
    page_limit = min(limit or runtime.config.row_limit, runtime.config.row_limit)
    if fault is not None and fault.mode is FaultMode.TRUNCATE:
        page_limit = min(page_limit, fault.row_limit)
    page = await runtime.store.read_window(window.start, window.end, page_limit)
    covered = page.next_from if page.next_from is not None else window.end
    runtime.served_until = max(runtime.served_until or covered, covered)
    body = render_data_page(
        window.start, window.end, page.rows, truncated=page.truncated, next_from=page.next_from
    )
    return Response(body, media_type="application/json")


@router.get("/data/latest")
async def data_latest(
    runtime: Runtime, _: Annotated[FaultSettings | None, Depends(fault_gate(FaultEndpoint.DATA_LATEST))]
) -> Response:
    """Return the newest sample of every channel."""
    rows = await runtime.store.latest()
    body = f'{{"time":"{format_time(now_ms())}","rows":{render_rows(rows)},"count":{len(rows)}}}'
    return Response(body.encode(), media_type="application/json")


@router.get("/alarms")
async def alarms(
    runtime: Runtime,
    fault: Annotated[FaultSettings | None, Depends(fault_gate(FaultEndpoint.ALARMS))],
    from_: From = None,
    to: To = None,
) -> dict[str, Any]:
    """Return alarms raised, resolved or changed within a half-open window."""
    window = resolve_window(runtime, from_, to)
    limit = runtime.config.alarm_limit
    if fault is not None and fault.mode is FaultMode.TRUNCATE:
        limit = min(limit, fault.row_limit)
    found, truncated = await runtime.store.alarms_in_window(window.start, window.end, limit)
    return {
        "from": format_time(window.start),
        "to": format_time(window.end),
        "alarms": [_alarm_json(alarm) for alarm in found],
        "count": len(found),
        "truncated": truncated,
    }


def _alarm_json(alarm: Alarm) -> dict[str, Any]:
    return {
        "alarm_id": alarm.alarm_id,
        "channel_id": alarm.channel_id,
        "level": alarm.level,
        "message": alarm.message,
        "raised_at": format_time(alarm.raised_at),
        "resolved_at": format_time(alarm.resolved_at) if alarm.resolved_at is not None else None,
    }
