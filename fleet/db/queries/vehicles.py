"""Vehicles: validation of their fields, creation, changes, deletion, access, and the names their owners see."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import asyncpg

from fleet.errors import InvalidInput, NotFound

VEHICLE_COLUMNS = (
    "id, name, vpn_ip, api_port, last_seen_at, last_sync_at, sync_status, software_version, created_at"
)
IMEI_MAX_LENGTH = 32
NAME_MAX_LENGTH = 200
API_KEY_MAX_LENGTH = 256
# One lock for every change of vehicle names and access: "unique per owner" is checked and written under it.
NAMES_LOCK = 0x666C656574_0001


def validate_imei(imei: str) -> str:
    """The schema's shape of a device identifier (protocol rules: `fleet.manage.devices.validate_imei`)."""
    imei = imei.strip()
    if not imei or len(imei) > IMEI_MAX_LENGTH or not all(c.isalnum() or c in "_-" for c in imei):
        raise InvalidInput(f"not a valid device identifier (IMEI): {imei!r}")
    return imei


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH or not name.isprintable():
        raise InvalidInput(f"vehicle name must be 1..{NAME_MAX_LENGTH} printable characters")
    return name


def validate_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"api port {port} is outside 1..65535")
    return port


def validate_vpn_ip(vpn_ip: str | None) -> str | None:
    if vpn_ip is None:
        return None
    try:
        return str(ipaddress.ip_address(vpn_ip.strip()))
    except ValueError as err:
        raise InvalidInput(f"not an IP address: {vpn_ip!r}") from err


def validate_api_key(key: str) -> str:
    """A vehicle's Outbound API key travels in an HTTP header: visible ASCII, no spaces, bounded."""
    if not 1 <= len(key) <= API_KEY_MAX_LENGTH or not all("!" <= c <= "~" for c in key):
        raise InvalidInput(
            f"a vehicle API key is 1..{API_KEY_MAX_LENGTH} visible ASCII characters without spaces"
        )
    return key


async def create_vehicle(
    conn: asyncpg.Connection,
    *,
    name: str,
    vpn_ip: str | None = None,
    api_port: int = 8001,
    api_key: str | None = None,
) -> asyncpg.Record:
    """Insert a vehicle and return it."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO vehicles (name, vpn_ip, api_port, api_key) VALUES ($1, $2::inet, $3, $4)
            RETURNING {VEHICLE_COLUMNS}""",
        validate_name(name),
        validate_vpn_ip(vpn_ip),
        validate_port(api_port),
        validate_api_key(api_key) if api_key is not None else None,
    )
    return row


async def update_vehicle(
    conn: asyncpg.Connection, vehicle_id: int, changes: dict[str, Any]
) -> asyncpg.Record:
    """Apply validated changes of `name`, `vpn_ip` (None clears it) and `api_port`.

    A change of address restarts the vehicle's sync schedule: it is tried at the next cycle, not after the
    backoff its old, wrong address earned.
    """
    readdressed = bool({"vpn_ip", "api_port"} & changes.keys())
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE vehicles SET
                name = CASE WHEN $2 THEN $3 ELSE name END,
                vpn_ip = CASE WHEN $4 THEN $5::inet ELSE vpn_ip END,
                api_port = CASE WHEN $6 THEN $7 ELSE api_port END,
                sync_failures = CASE WHEN $8 THEN 0 ELSE sync_failures END,
                sync_next_at = CASE WHEN $8 THEN NULL ELSE sync_next_at END
            WHERE id = $1 RETURNING {VEHICLE_COLUMNS}""",
        vehicle_id,
        "name" in changes,
        changes.get("name"),
        "vpn_ip" in changes,
        changes.get("vpn_ip"),
        "api_port" in changes,
        changes.get("api_port"),
        readdressed,
    )
    if row is None:
        raise NotFound(f"no vehicle {vehicle_id}")
    return row


async def set_api_key(conn: asyncpg.Connection, vehicle_id: int, api_key: str | None) -> bool:
    """Store a vehicle's Outbound API key (None: use VEHICLE_DEFAULT_API_KEY); restart its sync schedule."""
    status = await conn.execute(
        """UPDATE vehicles SET api_key = $2, sync_failures = 0, sync_next_at = NULL WHERE id = $1""",
        vehicle_id,
        api_key,
    )
    return status.endswith(" 1")


async def delete_vehicle(conn: asyncpg.Connection, vehicle_id: int) -> asyncpg.Record | None:
    """Delete a vehicle; its trackers become unlinked, its access, channels, alarms and journal go with it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"DELETE FROM vehicles WHERE id = $1 RETURNING {VEHICLE_COLUMNS}", vehicle_id
    )
    return row


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


async def lock_names(conn: asyncpg.Connection) -> None:
    """Serialise name and access changes until the end of the transaction (they are rare)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", NAMES_LOCK)


async def owners_of(conn: asyncpg.Connection, vehicle_id: int) -> list[int]:
    rows = await conn.fetch("SELECT user_id FROM vehicle_access WHERE vehicle_id = $1", vehicle_id)
    return [row[0] for row in rows]


async def name_in_use(
    conn: asyncpg.Connection, name: str, user_ids: Sequence[int], *, other_than: int | None
) -> asyncpg.Record | None:
    """A vehicle (other than `other_than`) named `name`, case-insensitively, that one of `user_ids` sees."""
    if not user_ids:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT v.id, va.user_id FROM vehicles v JOIN vehicle_access va ON va.vehicle_id = v.id
           WHERE va.user_id = ANY($1::bigint[]) AND lower(v.name) = lower($2) AND v.id <> $3 LIMIT 1""",
        list(user_ids),
        name,
        other_than or 0,
    )
    return row


async def revoke_access(conn: asyncpg.Connection, *, user_id: int, vehicle_id: int) -> bool:
    """Take a vehicle away from a user; False when they did not have it."""
    status = await conn.execute(
        "DELETE FROM vehicle_access WHERE user_id = $1 AND vehicle_id = $2", user_id, vehicle_id
    )
    return status.endswith(" 1")


async def attach_device(conn: asyncpg.Connection, *, imei: str, vehicle_id: int) -> asyncpg.Record:
    """Register a tracker on a vehicle, or put a known one there (test fixtures; use cases refuse moves)."""
    from fleet.db.queries.device_admin import adopt_history

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
    await adopt_history(conn, device["id"], vehicle_id)
    return device
