"""SQL of the live view: the fleet map's last positions, what a viewer may see, vehicle facts for the status rule,
and what a live poller needs to reach a vehicle.

Viewer-facing reads run in the viewer's tenant context (RLS decides what they see); the status sweep and the
pollers run in the system context like the other background services.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fleet.db.queries.pages import iso, json_items
from fleet.vehicle_status import PULL_FAILED

LATEST_POSITIONS_SQL = f"""
    SELECT vehicle_id, {iso("time")} AS time, latitude, longitude, speed, course
    FROM vehicle_last_positions ORDER BY vehicle_id"""


async def latest_positions_json(conn: asyncpg.Connection) -> str:
    """`{"items": [...], "total": N}`: the last located position of every vehicle visible in this context."""
    items, count = await json_items(conn, LATEST_POSITIONS_SQL)
    return f'{{"items":{items},"total":{count}}}'


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    """The inputs of the vehicle status rule (fleet.vehicle_status) for one vehicle."""

    vehicle_id: int
    pull_seen_at: datetime | None
    sync_status: str | None
    tracker_seen_at: datetime | None


_FACTS = """
    SELECT v.id, v.last_seen_at, v.sync_status,
           (SELECT max(d.last_seen_at) FROM devices d WHERE d.vehicle_id = v.id) AS tracker_seen_at
    FROM vehicles v"""


async def vehicle_facts(
    conn: asyncpg.Connection, vehicle_ids: Sequence[int] | None = None
) -> list[VehicleFacts]:
    """Status inputs of the given vehicles (all vehicles visible in this context when None)."""
    if vehicle_ids is None:
        rows = await conn.fetch(_FACTS)
    else:
        rows = await conn.fetch(_FACTS + " WHERE v.id = ANY($1::bigint[])", list(vehicle_ids))
    return [VehicleFacts(r["id"], r["last_seen_at"], r["sync_status"], r["tracker_seen_at"]) for r in rows]


@dataclass(frozen=True, slots=True)
class VehicleCard:
    """What the first message of a vehicle's live stream says about it."""

    vehicle_id: int
    name: str
    has_trackers: bool
    pull: bool
    facts: VehicleFacts
    last_position: dict[str, Any] | None


async def vehicle_card(conn: asyncpg.Connection, vehicle_id: int) -> VehicleCard | None:
    """The vehicle as a viewer sees it (None when it does not exist or is not visible in this context)."""
    row = await conn.fetchrow(
        f"""SELECT v.id, v.name, v.vpn_ip IS NOT NULL AS pull, v.last_seen_at, v.sync_status,
                   d.tracker_seen_at, d.trackers,
                   (SELECT json_build_object('device_id', p.device_id, 'time', {iso("p.time")},
                                             'latitude', p.latitude, 'longitude', p.longitude,
                                             'speed', p.speed, 'course', p.course, 'altitude', p.altitude,
                                             'satellites', p.satellites, 'valid', p.valid)
                    FROM vehicle_last_positions p WHERE p.vehicle_id = v.id) AS last_position
            FROM vehicles v
            LEFT JOIN LATERAL (SELECT max(x.last_seen_at) AS tracker_seen_at, count(*) AS trackers
                               FROM devices x WHERE x.vehicle_id = v.id) d ON true
            WHERE v.id = $1""",
        vehicle_id,
    )
    if row is None:
        return None
    facts = VehicleFacts(row["id"], row["last_seen_at"], row["sync_status"], row["tracker_seen_at"])
    return VehicleCard(row["id"], row["name"], row["trackers"] > 0, row["pull"], facts, row["last_position"])


async def visible_vehicle_ids(conn: asyncpg.Connection) -> frozenset[int]:
    """Every vehicle visible in this context."""
    return frozenset(r[0] for r in await conn.fetch("SELECT id FROM vehicles"))


async def viewer_access(
    conn: asyncpg.Connection,
    user_id: int,
    *,
    sessions: Sequence[str],
    api_keys: Sequence[int],
    with_vehicles: bool,
) -> asyncpg.Record | None:
    """A signed-in user's account state, the vehicles they see, and which of their sessions and keys ended
    (a session ends when it is revoked or is no sign-in session of the user, as `auth.session_state` says).

    Runs in the user's own tenant context: RLS decides the vehicles, exactly as for their REST requests.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT u.role, u.status, u.token_version,
                  CASE WHEN $4 THEN ARRAY(SELECT id FROM vehicles) END AS vehicles,
                  ARRAY(SELECT s FROM unnest($2::text[]) AS s
                        WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = s AND r.user_id = $1)
                           OR EXISTS (SELECT 1 FROM refresh_tokens r
                                      WHERE r.family_id = s AND r.revoked_at IS NOT NULL)) AS ended_sessions,
                  ARRAY(SELECT k.id FROM api_keys k
                        WHERE k.id = ANY($3::bigint[]) AND k.revoked_at IS NOT NULL) AS revoked_keys
           FROM users u WHERE u.id = $1""",
        user_id,
        list(sessions),
        list(api_keys),
        with_vehicles,
    )
    return row


@dataclass(frozen=True, slots=True)
class PollTarget:
    """How a live poller reaches a vehicle's Outbound API, and how to read its channels."""

    vehicle_id: int
    name: str
    host: str | None
    port: int
    api_key: str | None
    gps_channels: dict[str, Any] | None


async def poll_target(conn: asyncpg.Connection, vehicle_id: int) -> PollTarget | None:
    row = await conn.fetchrow(
        "SELECT id, name, host(vpn_ip) AS host, api_port, api_key, gps_channels FROM vehicles WHERE id = $1",
        vehicle_id,
    )
    if row is None:
        return None
    return PollTarget(
        row["id"], row["name"], row["host"], row["api_port"], row["api_key"], row["gps_channels"]
    )


async def note_pull_answered(conn: asyncpg.Connection, vehicle_id: int, at: datetime) -> None:
    """A live poll reached the vehicle: a sign of life, and a failed status is over."""
    await conn.execute(
        f"""UPDATE vehicles SET last_seen_at = greatest(last_seen_at, $2),
                   sync_status = CASE WHEN sync_status IN ('{PULL_FAILED}', 'unknown') THEN 'online'
                                      ELSE sync_status END
            WHERE id = $1""",
        vehicle_id,
        at,
    )


async def note_pull_failed(conn: asyncpg.Connection, vehicle_id: int) -> None:
    """A live poll could not reach the vehicle: its latest pull attempt failed."""
    await conn.execute(f"UPDATE vehicles SET sync_status = '{PULL_FAILED}' WHERE id = $1", vehicle_id)
