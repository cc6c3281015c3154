"""A vehicle's sync state in words: its status, and *why* when it is not online (API and CLI alike).

A vehicle with a wrong Outbound API key used to show `status: unknown` and nothing else; the reason was in the
sync journal, which only the database showed. The reason is, in order: the vehicle is not pulled (no
`vpn_ip`), it has no API key, its latest pull failed (the journal's note), or it has simply been silent.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from fleet.config import Settings
from fleet.db.queries import vehicle_views
from fleet.errors import NotFound

SET_KEY_HINT = "POST /admin/vehicles/{id}/api-key or `fleet vehicle set-key`"


def _reason(
    vehicle: dict[str, Any], sync: asyncpg.Record, latest: asyncpg.Record | None, has_default: bool
) -> str | None:
    online = vehicle["status"] == "online"
    if not sync["pulled"]:
        return (
            None
            if online
            else (
                "not pulled: the vehicle has no vpn_ip (set one with PATCH /admin/vehicles/{id}"
                " or `fleet vehicle edit --vpn-ip`); only its trackers can report"
            ).replace("{id}", str(vehicle["id"]))
        )
    if not sync["has_key"] and not has_default:
        return "no Outbound API key: set one with " + SET_KEY_HINT.replace("{id}", str(vehicle["id"]))
    if latest is not None and latest["status"] != "ok":
        return f"last pull {latest['status']}: {latest['error'] or 'no details'}"
    if online:
        return None
    if latest is None:
        return "never contacted yet: waiting for the first sync cycle"
    return f"no sign of life since {vehicle['last_activity_at'] or 'ever'}"


async def describe_sync(
    conn: asyncpg.Connection, settings: Settings, vehicle_id: int, *, limit: int
) -> dict[str, Any]:
    """The vehicle's sync state, visible in the caller's context (another owner's vehicle: NotFound)."""
    window = vehicle_views.online_window_sec(settings.sync_interval_sec)
    body = await vehicle_views.vehicle_json(conn, vehicle_id, window_sec=window)
    sync = await vehicle_views.sync_columns(conn, vehicle_id)
    if body is None or sync is None:
        raise NotFound(f"no vehicle {vehicle_id}")
    vehicle = json.loads(body)
    journal = await vehicle_views.journal_entries(conn, vehicle_id, limit)
    has_default = settings.vehicle_default_api_key is not None
    return {
        "vehicle_id": vehicle_id,
        "status": vehicle["status"],
        "reason": _reason(vehicle, sync, journal[0] if journal else None, has_default),
        "sync_status": vehicle["sync_status"],
        "last_sync_at": vehicle["last_sync_at"],
        "last_seen_at": vehicle["last_seen_at"],
        "next_attempt_at": sync["next_attempt_at"],
        "failing_cycles": sync["sync_failures"],
        "pulled": sync["pulled"],
        "api_key": "vehicle" if sync["has_key"] else "default" if has_default else "none",
        "journal": [dict(row) for row in journal],
    }
