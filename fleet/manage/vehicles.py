"""Vehicles: create, edit, rename (owners may rename their own), delete, the Outbound API key, and access.

**Names are unique per owner** (case-insensitively): no user sees two vehicles of the same name, so a name
is enough to tell vehicles apart in lists, exports and alerts. Creating, renaming and granting access are
checked against every user who has (or gets) the vehicle, under one advisory lock, and a clash is a conflict
(`duplicate_name`) that names the other vehicle's id. Vehicles nobody has been given yet are not checked;
superusers see every vehicle and tell them apart by id.

Deleting a vehicle unlinks its trackers and removes its access grants, channels, alarms and sync journal;
its time series (positions, measurements, CAN data, events, raw frames) stay, visible to superusers only,
until retention drops their partitions. Vehicle ids are never reused, so they never reattach.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import asyncpg

from fleet.db.queries import vehicles as vehicles_q
from fleet.db.queries.users import get_user, grant_vehicle
from fleet.errors import Conflict, Forbidden, InvalidInput, NotFound
from fleet.manage.actor import Actor
from fleet.manage.users import require_user


def _target(vehicle_id: int) -> str:
    return f"vehicle:{vehicle_id}"


async def _check_name(
    conn: asyncpg.Connection, name: str, user_ids: Sequence[int], *, vehicle_id: int | None
) -> None:
    clash = await vehicles_q.name_in_use(conn, name, user_ids, other_than=vehicle_id)
    if clash is not None:
        raise Conflict(
            f"user {clash['user_id']} already has a vehicle named {name!r} (vehicle {clash['id']}); "
            "vehicle names are unique per owner",
            code="duplicate_name",
        )


def _require_superuser(actor: Actor) -> None:
    if not actor.is_superuser:
        raise Forbidden("this operation needs a superuser")


async def create_vehicle(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    name: str,
    vpn_ip: str | None = None,
    api_port: int = 8001,
    api_key: str | None = None,
    owner_ids: Sequence[int] = (),
) -> asyncpg.Record:
    """Register a vehicle, optionally giving it to owners at once."""
    _require_superuser(actor)
    name = vehicles_q.validate_name(name)
    owners = list(dict.fromkeys(owner_ids))
    for user_id in owners:
        if await get_user(conn, user_id) is None:
            raise InvalidInput(f"owner_ids: no user {user_id}")
    await vehicles_q.lock_names(conn)
    await _check_name(conn, name, owners, vehicle_id=None)
    row = await vehicles_q.create_vehicle(conn, name=name, vpn_ip=vpn_ip, api_port=api_port, api_key=api_key)
    for user_id in owners:
        await grant_vehicle(conn, user_id=user_id, vehicle_id=row["id"], granted_by=actor.user_id)
    await actor.audit(
        conn,
        "vehicle.create",
        _target(row["id"]),
        name=row["name"],
        vpn_ip=str(row["vpn_ip"]) if row["vpn_ip"] is not None else None,
        api_port=row["api_port"],
        api_key="set" if api_key else None,
        owner_ids=owners,
    )
    return row


async def edit_vehicle(
    conn: asyncpg.Connection, actor: Actor, vehicle_id: int, changes: dict[str, Any]
) -> asyncpg.Record:
    """Change any of `name`, `vpn_ip` (None clears it: the vehicle is no longer pulled) and `api_port`."""
    _require_superuser(actor)
    unknown = set(changes) - {"name", "vpn_ip", "api_port"}
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} here")
    clean: dict[str, Any] = {}
    if "name" in changes:
        clean["name"] = vehicles_q.validate_name(changes["name"])
    if "vpn_ip" in changes:
        clean["vpn_ip"] = vehicles_q.validate_vpn_ip(changes["vpn_ip"])
    if "api_port" in changes:
        clean["api_port"] = vehicles_q.validate_port(changes["api_port"])
    before = await vehicles_q.require_vehicle(conn, vehicle_id)
    if "name" in clean:
        await vehicles_q.lock_names(conn)
        await _check_name(
            conn, clean["name"], await vehicles_q.owners_of(conn, vehicle_id), vehicle_id=vehicle_id
        )
    row = await vehicles_q.update_vehicle(conn, vehicle_id, clean)
    changed = {
        key: {"from": _plain(before[key]), "to": _plain(row[key])} for key in clean if before[key] != row[key]
    }
    if changed:
        await actor.audit(conn, "vehicle.edit", _target(vehicle_id), changes=changed)
    return row


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, int | str) else str(value)


async def rename_vehicle(
    conn: asyncpg.Connection, actor: Actor, vehicle_id: int, name: str
) -> asyncpg.Record:
    """Rename a vehicle: a superuser any, an owner one assigned to them (else it does not exist for them).

    Runs in a system context (owners have no write access to `vehicles`); the rule is checked here.
    """
    if not actor.is_superuser:
        owners = await vehicles_q.owners_of(conn, vehicle_id)
        if actor.user_id is None or actor.user_id not in owners:
            raise NotFound(f"no vehicle {vehicle_id}")
    name = vehicles_q.validate_name(name)
    before = await vehicles_q.require_vehicle(conn, vehicle_id)
    await vehicles_q.lock_names(conn)
    await _check_name(conn, name, await vehicles_q.owners_of(conn, vehicle_id), vehicle_id=vehicle_id)
    row = await vehicles_q.update_vehicle(conn, vehicle_id, {"name": name})
    if before["name"] != row["name"]:
        await actor.audit(
            conn, "vehicle.rename", _target(vehicle_id), previous=before["name"], name=row["name"]
        )
    return row


async def delete_vehicle(conn: asyncpg.Connection, actor: Actor, vehicle_id: int) -> None:
    """Delete a vehicle (see the module notes for what happens to its data)."""
    _require_superuser(actor)
    owners = await vehicles_q.owners_of(conn, vehicle_id)
    row = await vehicles_q.delete_vehicle(conn, vehicle_id)
    if row is None:
        raise NotFound(f"no vehicle {vehicle_id}")
    await actor.audit(conn, "vehicle.delete", _target(vehicle_id), name=row["name"], owner_ids=owners)


async def set_api_key(
    conn: asyncpg.Connection, actor: Actor, vehicle_id: int, api_key: str | None, *, use_default: bool = False
) -> str | None:
    """Set the vehicle's Outbound API key, generate one (returned, shown once), or clear it (`use_default`).

    The sync schedule restarts, so the vehicle is tried with the new key at the next cycle.
    """
    _require_superuser(actor)
    if use_default and api_key is not None:
        raise InvalidInput("give an api_key or use_default, not both")
    generated = None
    if not use_default and api_key is None:
        generated = api_key = secrets.token_urlsafe(32)
    elif api_key is not None:
        api_key = vehicles_q.validate_api_key(api_key)
    if not await vehicles_q.set_api_key(conn, vehicle_id, api_key):
        raise NotFound(f"no vehicle {vehicle_id}")
    how = "default" if use_default else "generated" if generated else "set"
    await actor.audit(conn, "vehicle.api_key", _target(vehicle_id), api_key=how)
    return generated


async def assign(
    conn: asyncpg.Connection, actor: Actor, vehicle_id: int, user_ref: int | str
) -> tuple[Any, bool]:
    """Give a user access to a vehicle: (the user, whether it was new)."""
    _require_superuser(actor)
    vehicle = await vehicles_q.require_vehicle(conn, vehicle_id)
    user = await require_user(conn, user_ref)
    await vehicles_q.lock_names(conn)
    await _check_name(conn, vehicle["name"], [user["id"]], vehicle_id=vehicle_id)
    granted = await grant_vehicle(conn, user_id=user["id"], vehicle_id=vehicle_id, granted_by=actor.user_id)
    await actor.audit(
        conn, "vehicle.assign", _target(vehicle_id), user_id=user["id"], email=user["email"], granted=granted
    )
    return user, granted


async def remove_access(conn: asyncpg.Connection, actor: Actor, vehicle_id: int, user_ref: int | str) -> Any:
    """Take a vehicle away from a user (their open pages lose it on the next request)."""
    _require_superuser(actor)
    await vehicles_q.require_vehicle(conn, vehicle_id)
    user = await require_user(conn, user_ref)
    if not await vehicles_q.revoke_access(conn, user_id=user["id"], vehicle_id=vehicle_id):
        raise NotFound(f"user {user['id']} has no access to vehicle {vehicle_id}")
    await actor.audit(conn, "vehicle.unassign", _target(vehicle_id), user_id=user["id"], email=user["email"])
    return user
