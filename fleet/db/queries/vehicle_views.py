"""What the API shows about vehicles: the fleet list and a vehicle's status, computed in SQL.

Online/offline/unknown is derived in one place (`STATUS_SQL`) for the list and the status endpoint:
a vehicle is *online* when its latest sign of life — the sync service reaching it (`vehicles.last_seen_at`)
or one of its trackers sending (`devices.last_seen_at`) — is within the online window, *offline* when
older, and *unknown* when there was never any.
"""

from __future__ import annotations

import asyncpg

from fleet.db.queries.pages import iso, json_items, json_page

# Missed sync cycles tolerated before a vehicle counts as offline.
ONLINE_WINDOW_CYCLES = 3

_ACTIVITY = "greatest(v.last_seen_at, d.last_device_seen_at)"
STATUS_SQL = f"""CASE WHEN {_ACTIVITY} IS NULL THEN 'unknown'
                      WHEN {_ACTIVITY} >= now() - make_interval(secs => $1) THEN 'online'
                      ELSE 'offline' END"""

_VEHICLE_SELECT = f"""
    SELECT v.id, v.name, {STATUS_SQL} AS status,
           {iso("v.last_seen_at")} AS last_seen_at, {iso("v.last_sync_at")} AS last_sync_at,
           {iso("d.last_device_seen_at")} AS last_device_seen_at, {iso(_ACTIVITY)} AS last_activity_at,
           v.sync_status, v.software_version, coalesce(d.devices, '[]'::json) AS devices
    FROM vehicles v
    LEFT JOIN LATERAL (
        SELECT max(x.last_seen_at) AS last_device_seen_at,
               json_agg(json_build_object('id', x.id, 'imei', x.imei) ORDER BY x.id) AS devices
        FROM devices x WHERE x.vehicle_id = v.id
    ) d ON true"""


def online_window_sec(sync_interval_sec: float) -> float:
    return ONLINE_WINDOW_CYCLES * sync_interval_sec


async def vehicles_page(conn: asyncpg.Connection, *, window_sec: float, limit: int, offset: int) -> bytes:
    """The vehicles visible in this context (RLS decides which), by name."""
    return await json_page(
        conn,
        f"{_VEHICLE_SELECT} ORDER BY v.name, v.id",
        "SELECT count(*) FROM vehicles WHERE $1::float8 IS NOT NULL",
        window_sec,
        limit=limit,
        offset=offset,
        extra={"online_window_sec": window_sec},
    )


async def vehicle_json(conn: asyncpg.Connection, vehicle_id: int, *, window_sec: float) -> str | None:
    """One vehicle as a JSON object (text), or None when it is not visible."""
    items, count = await json_items(conn, f"{_VEHICLE_SELECT} WHERE v.id = $2", window_sec, vehicle_id)
    return items[1:-1] if count else None


LAST_POSITION_SQL = f"""
    SELECT p.device_id, {iso("p.device_time")} AS time, {iso("p.fix_time")} AS fix_time, p.valid,
           p.latitude, p.longitude, p.altitude, p.speed, p.course, p.satellites, p.hdop
    FROM positions p WHERE p.vehicle_id = $1 ORDER BY p.device_time DESC LIMIT 1"""


async def last_position_json(conn: asyncpg.Connection, vehicle_id: int) -> str | None:
    items, count = await json_items(conn, LAST_POSITION_SQL, vehicle_id)
    return items[1:-1] if count else None


async def alarms_page(
    conn: asyncpg.Connection, vehicle_id: int, *, include_resolved: bool, limit: int, offset: int
) -> bytes:
    """Alarms of a vehicle, newest first; only active (unresolved) ones unless `include_resolved`."""
    where = "vehicle_id = $1 AND ($2 OR resolved_at IS NULL)"
    return await json_page(
        conn,
        f"""SELECT id, alarm_id, channel_id, level, message, {iso("raised_at")} AS raised_at,
                   {iso("resolved_at")} AS resolved_at, (resolved_at IS NULL) AS active,
                   {iso("synced_at")} AS synced_at
            FROM alarms_log WHERE {where} ORDER BY raised_at DESC, id DESC""",
        f"SELECT count(*) FROM alarms_log WHERE {where}",
        vehicle_id,
        include_resolved,
        limit=limit,
        offset=offset,
        extra={"vehicle_id": vehicle_id, "active_only": not include_resolved},
    )


async def sync_columns(conn: asyncpg.Connection, vehicle_id: int) -> asyncpg.Record | None:
    """The sync bookkeeping of a vehicle (without its key: only whether it has one)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT vpn_ip IS NOT NULL AS pulled, api_key IS NOT NULL AS has_key, sync_status, sync_failures,
                   {iso("sync_next_at")} AS next_attempt_at
            FROM vehicles WHERE id = $1""",
        vehicle_id,
    )
    return row


async def journal_entries(conn: asyncpg.Connection, vehicle_id: int, limit: int) -> list[asyncpg.Record]:
    """The latest sync journal rows of a vehicle, newest first."""
    rows = await conn.fetch(
        f"""SELECT {iso("started_at")} AS started_at, {iso("finished_at")} AS finished_at, status,
                   rows_written, duration_ms, {iso("window_from")} AS window_from,
                   {iso("window_to")} AS window_to, error
            FROM sync_journal WHERE vehicle_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2""",
        vehicle_id,
        limit,
    )
    return list(rows)
