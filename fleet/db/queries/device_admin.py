"""Trackers as an administrator manages them: pre-registration, linking to vehicles, deletion, the full list.

Superuser (or system) context: the admin list shows every tracker, linked or not.
"""

from __future__ import annotations

import asyncpg

from fleet.db.queries.pages import iso, json_page

DEVICE_FIELDS = (
    "id, imei, protocol, vehicle_id, name, created_at, last_connected_at, last_seen_at, "
    "allowed_networks::text[] AS allowed_networks"
)
# Rows stored while a tracker had no vehicle become the vehicle's when it is linked.
HISTORY_TABLES = ("positions", "raw_frames", "can_data", "events")


async def get_device(conn: asyncpg.Connection, device_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {DEVICE_FIELDS} FROM devices WHERE id = $1", device_id
    )
    return row


async def device_by_imei(conn: asyncpg.Connection, imei: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {DEVICE_FIELDS} FROM devices WHERE imei = $1", imei
    )
    return row


async def insert_device(
    conn: asyncpg.Connection, *, imei: str, protocol: str, vehicle_id: int | None
) -> asyncpg.Record | None:
    """Register a tracker; None when the IMEI is already registered."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO devices (imei, protocol, vehicle_id) VALUES ($1, $2, $3)
            ON CONFLICT (imei) DO NOTHING RETURNING {DEVICE_FIELDS}""",
        imei,
        protocol,
        vehicle_id,
    )
    return row


async def set_vehicle(conn: asyncpg.Connection, device_id: int, vehicle_id: int | None) -> asyncpg.Record:
    """Link a tracker to a vehicle (None: unlink). History already stored stays where it was recorded."""
    row: asyncpg.Record = await conn.fetchrow(
        f"UPDATE devices SET vehicle_id = $2 WHERE id = $1 RETURNING {DEVICE_FIELDS}", device_id, vehicle_id
    )
    if vehicle_id is not None:
        await adopt_history(conn, device_id, vehicle_id)
    return row


async def set_allowed_networks(
    conn: asyncpg.Connection, device_id: int, networks: list[str] | None
) -> asyncpg.Record:
    """Set the networks a tracker may connect from (None: any address)."""
    row: asyncpg.Record = await conn.fetchrow(
        f"UPDATE devices SET allowed_networks = $2::cidr[] WHERE id = $1 RETURNING {DEVICE_FIELDS}",
        device_id,
        networks,
    )
    return row


async def adopt_history(conn: asyncpg.Connection, device_id: int, vehicle_id: int) -> None:
    """Give the vehicle the rows its tracker stored while it belonged to no vehicle (owners then see them)."""
    for table in HISTORY_TABLES:
        await conn.execute(
            f"UPDATE {table} SET vehicle_id = $2 WHERE device_id = $1 AND vehicle_id IS NULL",
            device_id,
            vehicle_id,
        )


async def has_history(conn: asyncpg.Connection, device_id: int) -> bool:
    """Whether any position or event of the tracker is stored (each probe is one index lookup)."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM positions WHERE device_id = $1)
               OR EXISTS (SELECT 1 FROM events WHERE device_id = $1)""",
        device_id,
    )
    return found


async def delete_device(conn: asyncpg.Connection, device_id: int) -> bool:
    status = await conn.execute("DELETE FROM devices WHERE id = $1", device_id)
    return status.endswith(" 1")


_ONLINE = "(d.last_seen_at >= now() - make_interval(secs => $1))"
_ADMIN_FILTER = (
    """($2::boolean IS NULL OR (d.vehicle_id IS NOT NULL) = $2)
    AND ($3::bigint IS NULL OR d.vehicle_id = $3)
    AND ($4::text IS NULL OR d.protocol = $4)
    AND ($5::text IS NULL OR strpos(d.imei, $5) > 0)
    AND ($6::text IS NULL OR $6 = CASE WHEN d.last_seen_at IS NULL THEN 'unknown'
                                       WHEN """
    + _ONLINE
    + """ THEN 'online' ELSE 'offline' END)"""
)


async def admin_devices_page(
    conn: asyncpg.Connection,
    *,
    window_sec: float,
    linked: bool | None,
    vehicle_id: int | None,
    protocol: str | None,
    imei: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> bytes:
    """Every tracker with its vehicle and last connection, newest first, filtered (JSON page)."""
    return await json_page(
        conn,
        f"""SELECT d.id, d.imei, d.protocol, d.name, d.vehicle_id, v.name AS vehicle_name,
                   CASE WHEN d.last_seen_at IS NULL THEN 'unknown' WHEN {_ONLINE} THEN 'online'
                        ELSE 'offline' END AS status,
                   {iso("d.created_at")} AS created_at, {iso("d.last_connected_at")} AS last_connected_at,
                   {iso("d.last_seen_at")} AS last_seen_at, d.last_peer, d.firmware,
                   d.allowed_networks::text[] AS allowed_networks
            FROM devices d LEFT JOIN vehicles v ON v.id = d.vehicle_id
            WHERE {_ADMIN_FILTER}
            ORDER BY d.id DESC""",
        f"SELECT count(*) FROM devices d WHERE {_ADMIN_FILTER}",
        window_sec,
        linked,
        vehicle_id,
        protocol,
        imei,
        status,
        limit=limit,
        offset=offset,
    )
