"""The messages of the live streams (docs/LIVE.md), built once per event and shared by every viewer as text.

Times are ISO 8601 UTC with `Z`; numbers are JSON numbers; absent values are `null`. A message is serialised
once, however many viewers receive it: the fan-out hands the same string to each viewer's queue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

HEARTBEAT = "heartbeat"


def dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def zulu(value: datetime | str | float | None) -> str | None:
    """A time as ISO 8601 UTC with `Z` (datetimes, ISO strings with an offset, or epoch seconds)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.endswith("Z"):
            return value
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def epoch(value: str | None) -> float | None:
    """Epoch seconds of an ISO time (None when missing or malformed)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def position(payload: dict[str, Any]) -> dict[str, Any]:
    """A `position` message from a bus `positions` payload (tracker or pull vehicle)."""
    return {
        "type": "position",
        "vehicle_id": payload.get("vehicle_id"),
        "device_id": payload.get("device_id"),
        "time": zulu(payload.get("time")),
        "latitude": payload.get("latitude"),
        "longitude": payload.get("longitude"),
        "speed": payload.get("speed"),
        "course": payload.get("course"),
        "altitude": payload.get("altitude"),
        "satellites": payload.get("satellites"),
        "valid": payload.get("valid"),
        "source": payload.get("source") or "tracker",
        "committed_at": zulu(payload.get("committed_at")),
    }


def status(
    vehicle_id: int, state: str, last_activity_at: datetime | None, reason: str | None
) -> dict[str, Any]:
    return {
        "type": "status",
        "vehicle_id": vehicle_id,
        "state": state,
        "last_activity_at": zulu(last_activity_at),
        "reason": reason,
    }


def event(payload: dict[str, Any]) -> dict[str, Any]:
    """An `event` message from a bus `events` payload (a stored tracker event)."""
    return {
        "type": "event",
        "vehicle_id": payload.get("vehicle_id"),
        "device_id": payload.get("device_id"),
        "kind": payload.get("kind"),
        "code": payload.get("code"),
        "time": zulu(payload.get("time")),
        "latitude": payload.get("latitude"),
        "longitude": payload.get("longitude"),
        "description": payload.get("description"),
        "details": payload.get("details") or {},
    }


def tracker_alarm(payload: dict[str, Any]) -> dict[str, Any]:
    """The `alarm` message of a tracker's out-of-turn alarm event.

    `id` is null: the live bus carries the event, not its row id (the REST list has it); `device_id`, `code`
    and `time` identify it.
    """
    description = payload.get("description")
    return {
        "type": "alarm",
        "vehicle_id": payload.get("vehicle_id"),
        "source": "tracker",
        "id": None,
        "device_id": payload.get("device_id"),
        "code": payload.get("code"),
        "message": description or f"tracker alarm, event code {payload.get('code')}",
        "severity": "alarm",
        "time": zulu(payload.get("time")),
        "active": True,
        "latitude": payload.get("latitude"),
        "longitude": payload.get("longitude"),
    }


def vehicle_alarm(payload: dict[str, Any]) -> dict[str, Any]:
    """The `alarm` message of an alarm pulled from a vehicle's Outbound API (bus topic `alarms`)."""
    return {
        "type": "alarm",
        "vehicle_id": payload.get("vehicle_id"),
        "source": "vehicle",
        "id": payload.get("alarm_id"),
        "code": None,
        "channel_id": payload.get("channel_id"),
        "message": payload.get("message"),
        "severity": payload.get("level"),
        "time": zulu(payload.get("time")),
        "resolved_at": zulu(payload.get("resolved_at")),
        "active": bool(payload.get("active")),
    }


def command(payload: dict[str, Any]) -> dict[str, Any]:
    """A `command` message from a bus `commands` payload (a device command changed status)."""
    return {
        "type": "command",
        "vehicle_id": payload.get("vehicle_id"),
        "device_id": payload.get("device_id"),
        "command_id": payload.get("command_id"),
        "status": payload.get("status"),
        "answer": payload.get("answer"),
        "time": zulu(payload.get("time")),
    }


def error(code: str, message: str) -> str:
    return dumps({"type": "error", "code": code, "message": message})


def heartbeat(now: datetime) -> str:
    return dumps({"type": HEARTBEAT, "time": zulu(now)})
