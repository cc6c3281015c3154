"""Tracker events and the alarms of a vehicle (from its trackers and from its Outbound API).

`events` holds what a tracker reported *as* an event (fleet.ingest.rows): out-of-turn alarms (`~T`, kind
`alarm`), FLEX 2.0 extra records (`~E`/`~X`, kind `extra`, with their own fix in `attributes`) and text
`~E` (kind `text`). An alarm's fix is the position stored with it (same device, time and black-box index),
found through the positions' unique index. Every function runs in the caller's tenant context (RLS).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fleet.db.queries.pages import iso, json_page

# Kinds of `events.event_type` the ingest writes.
TRACKER_ALARM = "alarm"

_EVENT_COLUMNS = f"""e.id, e.device_id, e.vehicle_id, {iso("e.time")} AS time, e.event_type AS kind,
    e.event_code AS code, e.description, e.record_index,
    coalesce((e.attributes->>'latitude')::float8, p.latitude) AS latitude,
    coalesce((e.attributes->>'longitude')::float8, p.longitude) AS longitude,
    coalesce((e.attributes->>'speed_kmh')::float8, p.speed) AS speed,
    e.attributes AS details, {iso("e.received_at")} AS received_at"""
# The fix of an out-of-turn alarm is the position that came with it; extra records carry their own.
_ALARM_FIX = f"""LEFT JOIN LATERAL (
        SELECT x.latitude, x.longitude, x.speed FROM positions x
        WHERE e.event_type = '{TRACKER_ALARM}' AND x.device_id = e.device_id AND x.device_time = e.time
          AND x.record_index = e.record_index
        LIMIT 1) p ON true"""


async def events_page(
    conn: asyncpg.Connection,
    *,
    vehicle_id: int | None = None,
    device_id: int | None = None,
    start: datetime,
    end: datetime,
    kind: str | None,
    newest_first: bool,
    limit: int,
    offset: int,
) -> bytes:
    """Events of a vehicle or of a device in [start, end), newest first unless `newest_first` is False."""
    if (vehicle_id is None) == (device_id is None):
        raise ValueError("give exactly one of vehicle_id and device_id")
    column, key = ("e.vehicle_id", vehicle_id) if vehicle_id is not None else ("e.device_id", device_id)
    where = f"{column} = $1 AND e.time >= $2 AND e.time < $3 AND ($4::text IS NULL OR e.event_type = $4)"
    order = "DESC" if newest_first else "ASC"
    extra: dict[str, object] = {"from": start.isoformat(), "to": end.isoformat()}
    extra["vehicle_id" if vehicle_id is not None else "device_id"] = key
    return await json_page(
        conn,
        f"SELECT {_EVENT_COLUMNS} FROM events e {_ALARM_FIX} WHERE {where} ORDER BY e.time {order}, e.id {order}",
        f"SELECT count(*) FROM events e WHERE {where}",
        key,
        start,
        end,
        kind,
        limit=limit,
        offset=offset,
        extra=extra,
    )


# Pulled alarms (`alarms_log`) and tracker alarm events in one list. A tracker reports the moment of an
# alarm, never its end: a tracker alarm counts as active for `$3` seconds after it was raised.
_ALARMS = f"""
    SELECT 'vehicle' AS source, a.id, a.alarm_id, NULL::bigint AS device_id, a.channel_id, NULL::integer AS code,
           a.level, a.message, {iso("a.raised_at")} AS raised_at, {iso("a.resolved_at")} AS resolved_at,
           (a.resolved_at IS NULL) AS active, {iso("a.synced_at")} AS synced_at,
           NULL::float8 AS latitude, NULL::float8 AS longitude, a.raised_at AS sort_time
    FROM alarms_log a
    WHERE a.vehicle_id = $1 AND ($2 OR a.resolved_at IS NULL)
    UNION ALL
    SELECT 'tracker', e.id, NULL, e.device_id, NULL, e.event_code, 'alarm',
           coalesce(e.description, 'tracker alarm, event code ' || e.event_code),
           {iso("e.time")}, NULL, (e.time >= now() - make_interval(secs => $3)), {iso("e.received_at")},
           p.latitude, p.longitude, e.time
    FROM events e {_ALARM_FIX}
    WHERE e.vehicle_id = $1 AND e.event_type = '{TRACKER_ALARM}'
      AND ($2 OR e.time >= now() - make_interval(secs => $3))"""
_ALARM_COUNT = f"""
    SELECT (SELECT count(*) FROM alarms_log a WHERE a.vehicle_id = $1 AND ($2 OR a.resolved_at IS NULL))
         + (SELECT count(*) FROM events e WHERE e.vehicle_id = $1 AND e.event_type = '{TRACKER_ALARM}'
              AND ($2 OR e.time >= now() - make_interval(secs => $3)))"""


async def alarms_page(
    conn: asyncpg.Connection,
    vehicle_id: int,
    *,
    include_resolved: bool,
    tracker_active_sec: float,
    limit: int,
    offset: int,
) -> bytes:
    """Alarms of a vehicle from both sources, newest first; only active ones unless `include_resolved`."""
    return await json_page(
        conn,
        f"""SELECT source, id, alarm_id, device_id, channel_id, code, level, message, raised_at, resolved_at,
                   active, synced_at, latitude, longitude
            FROM ({_ALARMS}) s ORDER BY sort_time DESC, source, id DESC""",
        _ALARM_COUNT,
        vehicle_id,
        include_resolved,
        tracker_active_sec,
        limit=limit,
        offset=offset,
        extra={
            "vehicle_id": vehicle_id,
            "active_only": not include_resolved,
            "tracker_alarm_active_sec": tracker_active_sec,
        },
    )
