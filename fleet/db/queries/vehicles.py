"""Vehicles and the trackers (devices) attached to them."""

from __future__ import annotations

import ipaddress
from typing import Any

import asyncpg

from fleet.errors import InvalidInput, NotFound

VEHICLE_COLUMNS = (
    "id, name, vpn_ip, api_port, last_seen_at, last_sync_at, sync_status, software_version, created_at"
)
IMEI_MAX_LENGTH = 32


def validate_imei(imei: str) -> str:
    imei = imei.strip()
    if not imei or len(imei) > IMEI_MAX_LENGTH or not all(c.isalnum() or c in "_-" for c in imei):
        raise InvalidInput(f"not a valid device identifier (IMEI): {imei!r}")
    return imei


async def create_vehicle(
    conn: asyncpg.Connection,
    *,
    name: str,
    vpn_ip: str | None = None,
    api_port: int = 8001,
    api_key: str | None = None,
) -> asyncpg.Record:
    """Insert a vehicle and return it."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("vehicle name must be 1..200 characters")
    if not 1 <= api_port <= 65535:
        raise InvalidInput(f"api port {api_port} is outside 1..65535")
    if vpn_ip is not None:
        try:
            vpn_ip = str(ipaddress.ip_address(vpn_ip))
        except ValueError as err:
            raise InvalidInput(f"not an IP address: {vpn_ip!r}") from err
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO vehicles (name, vpn_ip, api_port, api_key) VALUES ($1, $2::inet, $3, $4)
            RETURNING {VEHICLE_COLUMNS}""",
        name,
        vpn_ip,
        api_port,
        api_key,
    )
    return row


async def attach_device(conn: asyncpg.Connection, *, imei: str, vehicle_id: int) -> asyncpg.Record:
    """Attach a tracker to a vehicle (registering it when new) and move its history to the vehicle."""
    imei = validate_imei(imei)
    try:
        device: asyncpg.Record = await conn.fetchrow(
            """INSERT INTO devices (imei, vehicle_id) VALUES ($1, $2)
               ON CONFLICT (imei) DO UPDATE SET vehicle_id = EXCLUDED.vehicle_id
               RETURNING id, imei, vehicle_id""",
            imei,
            vehicle_id,
        )
    except asyncpg.ForeignKeyViolationError as err:
        raise NotFound(f"no vehicle {vehicle_id}") from err
    # Rows stored while the device was unassigned become visible to the vehicle's owners.
    for table in ("positions", "raw_frames", "can_data", "events"):
        await conn.execute(
            f"UPDATE {table} SET vehicle_id = $2 WHERE device_id = $1 AND vehicle_id IS NULL",
            device["id"],
            vehicle_id,
        )
    return device


async def get_vehicle(conn: asyncpg.Connection, vehicle_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE id = $1", vehicle_id
    )
    return row


async def require_vehicle(conn: asyncpg.Connection, vehicle_id: int) -> asyncpg.Record:
    row = await get_vehicle(conn, vehicle_id)
    if row is None:
        raise NotFound(f"no vehicle {vehicle_id}")
    return row


async def set_gps_channels(
    conn: asyncpg.Connection, vehicle_id: int, mapping: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Set a vehicle's explicit GPS channel mapping (None: recognise channels by name and unit again).

    The mapping is checked by `fleet.sync.gps.validate_mapping`; the sync service and the live pollers use it
    from their next pull of the vehicle.
    """
    from fleet.sync.gps import validate_mapping

    value = None
    if mapping is not None:
        try:
            value = validate_mapping(mapping)
        except ValueError as err:
            raise InvalidInput(str(err)) from err
    updated = await conn.fetchval(
        "UPDATE vehicles SET gps_channels = $2 WHERE id = $1 RETURNING id", vehicle_id, value
    )
    if updated is None:
        raise NotFound(f"no vehicle {vehicle_id}")
    return value
