"""Trackers and their data for the device API (seed 000: /api/v1, /api/v2 and the README aliases).

Every function runs in the caller's tenant context: an owner sees the devices of the vehicles they
have access to (RLS), a superuser every device including unassigned ones.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fleet.db.queries.pages import iso, json_items, json_page

BIGINT_MAX = 2**63 - 1
DEVICE_ONLINE_SQL = "(last_seen_at >= now() - make_interval(secs => $1))"
_DEVICE_COLUMNS = f"""id, imei, name, protocol, vehicle_id, firmware,
    CASE WHEN last_seen_at IS NULL THEN 'unknown' WHEN {DEVICE_ONLINE_SQL} THEN 'online' ELSE 'offline' END
        AS status,
    {iso("created_at")} AS created_at, {iso("last_connected_at")} AS last_connected_at,
    {iso("last_seen_at")} AS last_seen_at, protocol_state,
    CASE WHEN protocol = 'navtelecom' THEN (protocol_state ->> 'protocol_version')::int END
        AS flex_protocol_version,
    CASE WHEN protocol = 'navtelecom' THEN (protocol_state ->> 'struct_version')::int END
        AS flex_struct_version"""


async def resolve_device(conn: asyncpg.Connection, ref: str) -> asyncpg.Record | None:
    """A device by IMEI or numeric id (an IMEI match wins: IMEIs are digits too)."""
    ref = ref.strip()
    numeric = (
        int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 19 and int(ref) <= BIGINT_MAX else None
    )
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT id, imei, vehicle_id, protocol FROM devices WHERE imei = $1 OR id = $2
           ORDER BY (imei = $1) DESC LIMIT 1""",
        ref,
        numeric,
    )
    return row


async def devices_page(conn: asyncpg.Connection, *, window_sec: float, limit: int, offset: int) -> bytes:
    return await json_page(
        conn,
        f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY id",
        "SELECT count(*) FROM devices WHERE $1::float8 IS NOT NULL",
        window_sec,
        limit=limit,
        offset=offset,
    )


_TELEMETRY_RANGE = "device_id = $1 AND device_time >= $2 AND device_time < $3"


async def telemetry_page(
    conn: asyncpg.Connection,
    device_id: int,
    start: datetime,
    end: datetime,
    *,
    newest_first: bool,
    limit: int,
    offset: int,
) -> bytes:
    order = "DESC" if newest_first else "ASC"
    return await json_page(
        conn,
        f"""SELECT id, {iso("device_time")} AS time, {iso("fix_time")} AS fix_time,
                   {iso("received_at")} AS received_at, valid, latitude, longitude, altitude, speed, course,
                   satellites, hdop, record_index, event_code, attributes
            FROM positions WHERE {_TELEMETRY_RANGE} ORDER BY device_time {order}, id {order}""",
        f"SELECT count(*) FROM positions WHERE {_TELEMETRY_RANGE}",
        device_id,
        start,
        end,
        limit=limit,
        offset=offset,
        extra={"device_id": device_id},
    )


# A can_data row is one reading (all the signals one record or CAN frame brought); the API lists signals,
# so readings are expanded here. `id` is the reading's: the signals of one record share it.
_SIGNALS = "jsonb_to_recordset(c.signals) AS s(name text, value double precision, value_text text, unit text, source text)"
_CAN_RANGE = "c.device_id = $1 AND c.time >= $2 AND c.time < $3"
_CAN_NAME = "($4::text IS NULL OR s.name = $4)"


async def can_page(
    conn: asyncpg.Connection,
    device_id: int,
    start: datetime,
    end: datetime,
    *,
    name: str | None,
    limit: int,
    offset: int,
) -> bytes:
    return await json_page(
        conn,
        f"""SELECT c.id, {iso("c.time")} AS time, s.name, s.value, s.value_text, s.unit, s.source,
                   c.position_id
            FROM can_data c CROSS JOIN LATERAL {_SIGNALS}
            WHERE {_CAN_RANGE} AND {_CAN_NAME} ORDER BY c.time DESC, c.id DESC, s.source, s.name""",
        f"SELECT count(*) FROM can_data c CROSS JOIN LATERAL {_SIGNALS} WHERE {_CAN_RANGE} AND {_CAN_NAME}",
        device_id,
        start,
        end,
        name,
        limit=limit,
        offset=offset,
        extra={"device_id": device_id},
    )


async def latest_can_json(conn: asyncpg.Connection, device_id: int, since: datetime) -> str:
    """The newest value of each CAN signal of a device since `since`, as a JSON array."""
    items, _ = await json_items(
        conn,
        f"""SELECT name, value, value_text, unit, source, {iso("time")} AS time FROM (
                SELECT DISTINCT ON (s.name) s.name, s.value, s.value_text, s.unit, s.source, c.time
                FROM can_data c CROSS JOIN LATERAL {_SIGNALS}
                WHERE c.device_id = $1 AND c.time >= $2 ORDER BY s.name, c.time DESC) x
            ORDER BY name""",
        device_id,
        since,
    )
    return items


async def last_position_json(conn: asyncpg.Connection, device_id: int) -> str | None:
    items, count = await json_items(
        conn,
        f"""SELECT id, {iso("device_time")} AS time, {iso("fix_time")} AS fix_time, valid, latitude,
                   longitude, altitude, speed, course, satellites, hdop, attributes
            FROM positions WHERE device_id = $1 ORDER BY device_time DESC LIMIT 1""",
        device_id,
    )
    return items[1:-1] if count else None


_FRAME_RANGE = """($1::bigint IS NULL OR device_id = $1) AND received_at >= $2 AND received_at < $3
    AND ($4::text IS NULL OR outcome = $4)"""


async def raw_frames_page(
    conn: asyncpg.Connection,
    device_id: int | None,
    start: datetime,
    end: datetime,
    *,
    outcome: str | None,
    limit: int,
    offset: int,
) -> bytes:
    """Received frames, newest first, with their bytes as hex (for re-decoding and support)."""
    return await json_page(
        conn,
        f"""SELECT id, device_id, {iso("received_at")} AS received_at, protocol, frame_type, peer, outcome,
                   error, octet_length(data) AS size, encode(data, 'hex') AS data_hex,
                   frame_length IS NOT NULL AS excerpt,
                   coalesce(frame_length, octet_length(data)) AS frame_length,
                   encode(frame_sha256, 'hex') AS frame_sha256
            FROM raw_frames WHERE {_FRAME_RANGE} ORDER BY received_at DESC, id DESC""",
        f"SELECT count(*) FROM raw_frames WHERE {_FRAME_RANGE}",
        device_id,
        start,
        end,
        outcome,
        limit=limit,
        offset=offset,
    )


async def stats(conn: asyncpg.Connection, *, window_sec: float) -> dict[str, int]:
    """Counts visible in this context: devices and vehicles, and the last 24 hours of data."""
    row = await conn.fetchrow(
        f"""SELECT (SELECT count(*) FROM vehicles) AS vehicles,
                   (SELECT count(*) FROM devices) AS devices,
                   (SELECT count(*) FROM devices WHERE {DEVICE_ONLINE_SQL}) AS devices_online,
                   (SELECT count(*) FROM positions WHERE device_time >= now() - interval '24 hours')
                       AS positions_24h,
                   (SELECT coalesce(sum(jsonb_array_length(signals)), 0) FROM can_data
                       WHERE time >= now() - interval '24 hours')::bigint AS can_data_24h,
                   (SELECT count(*) FROM events WHERE time >= now() - interval '24 hours') AS events_24h,
                   (SELECT count(*) FROM raw_frames WHERE received_at >= now() - interval '24 hours')
                       AS raw_frames_24h,
                   (SELECT count(*) FROM raw_frames WHERE received_at >= now() - interval '24 hours'
                       AND outcome <> 'ok') AS raw_frame_errors_24h""",
        window_sec,
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}
