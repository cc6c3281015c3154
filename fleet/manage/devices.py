"""Trackers: pre-register (production refuses unknown devices), link to a vehicle, unlink, delete.

A tracker belongs to at most one vehicle. Linking one that belongs to another vehicle is refused
(`device_linked_elsewhere`) unless the caller says `move`: a mistyped IMEI must not silently take a tracker
away from another owner's vehicle. History already stored stays with the vehicle it was recorded for.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import cache

import asyncpg

from fleet.db.queries import device_admin
from fleet.db.queries.vehicles import require_vehicle
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.manage.actor import Actor
from fleet.protocol.registry import protocols

DEFAULT_PROTOCOL = "navtelecom"
# A tracker's own allow-list stays short: it names the APN or VPN networks it uses, not a fleet's addresses.
MAX_DEVICE_NETWORKS = 64


@cache
def _identity_rule(protocol: str) -> tuple[re.Pattern[str], str] | None:
    spec = protocols().get(protocol)
    if spec is None:
        return None
    return re.compile(spec.identity_pattern, re.ASCII), spec.identity_shape


def validate_imei(imei: str, protocol: str = DEFAULT_PROTOCOL) -> str:
    """The IMEI as the protocol sends it, or InvalidInput naming the rule."""
    rule = _identity_rule(protocol)
    if rule is None:
        raise InvalidInput(f"unknown protocol {protocol!r} (one of: {', '.join(protocols())})")
    pattern, shape = rule
    imei = imei.strip()
    if not pattern.fullmatch(imei):
        raise InvalidInput(f"not a valid {protocol} IMEI: {imei!r} ({shape})", code="invalid_imei")
    return imei


def normalise_networks(networks: Sequence[str] | None) -> list[str] | None:
    """CIDR networks as PostgreSQL stores them (host bits cleared); None for any address."""
    if not networks:
        return None
    if len(networks) > MAX_DEVICE_NETWORKS:
        raise InvalidInput(f"at most {MAX_DEVICE_NETWORKS} networks per tracker", code="invalid_networks")
    result: list[str] = []
    for value in networks:
        try:
            network = str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise InvalidInput(
                f"not a network in CIDR notation: {value!r} (e.g. 10.0.0.0/24 or 198.51.100.7/32)",
                code="invalid_networks",
            ) from None
        if network not in result:
            result.append(network)
    return result


async def require_device(conn: asyncpg.Connection, ref: int | str) -> asyncpg.Record:
    """A tracker by id, or by IMEI when `ref` is a string."""
    row = await (
        device_admin.get_device(conn, ref) if isinstance(ref, int) else device_admin.device_by_imei(conn, ref)
    )
    if row is None:
        raise NotFound(f"no device {ref}")
    return row


def _target(device: asyncpg.Record) -> str:
    return f"device:{device['id']}"


async def register_device(
    conn: asyncpg.Connection, actor: Actor, *, imei: str, protocol: str, vehicle_id: int | None = None
) -> asyncpg.Record:
    """Pre-register a tracker, optionally on a vehicle; a known IMEI is a conflict (`device_exists`)."""
    imei = validate_imei(imei, protocol)
    if vehicle_id is not None:
        await require_vehicle(conn, vehicle_id)
    row = await device_admin.insert_device(conn, imei=imei, protocol=protocol, vehicle_id=vehicle_id)
    if row is None:
        existing = await require_device(conn, imei)
        raise Conflict(f"IMEI {imei} is already registered (device {existing['id']})", code="device_exists")
    await actor.audit(
        conn, "device.register", _target(row), imei=imei, protocol=protocol, vehicle_id=vehicle_id
    )
    return row


async def link_device(
    conn: asyncpg.Connection, actor: Actor, ref: int | str, *, vehicle_id: int, move: bool = False
) -> asyncpg.Record:
    """Put a tracker on a vehicle; one on another vehicle moves only with `move`."""
    device = await require_device(conn, ref)
    await require_vehicle(conn, vehicle_id)
    previous = device["vehicle_id"]
    if previous == vehicle_id:
        return device
    if previous is not None and not move:
        raise Conflict(
            f"device {device['id']} (IMEI {device['imei']}) is linked to vehicle {previous}; "
            "unlink it first or move it explicitly",
            code="device_linked_elsewhere",
        )
    row = await device_admin.set_vehicle(conn, device["id"], vehicle_id)
    await actor.audit(
        conn,
        "device.move" if previous is not None else "device.link",
        _target(device),
        imei=device["imei"],
        vehicle_id=vehicle_id,
        previous_vehicle_id=previous,
    )
    return row


async def link_by_imei(
    conn: asyncpg.Connection, actor: Actor, imei: str, *, protocol: str, vehicle_id: int, move: bool = False
) -> asyncpg.Record:
    """Link the tracker with this IMEI to a vehicle, registering it first when it is new (the CLI's way)."""
    imei = validate_imei(imei, protocol)
    if await device_admin.device_by_imei(conn, imei) is None:
        return await register_device(conn, actor, imei=imei, protocol=protocol, vehicle_id=vehicle_id)
    return await link_device(conn, actor, imei, vehicle_id=vehicle_id, move=move)


async def unlink_device(conn: asyncpg.Connection, actor: Actor, ref: int | str) -> asyncpg.Record:
    """Take a tracker off its vehicle (it keeps reporting; its new data belongs to no vehicle until linked)."""
    device = await require_device(conn, ref)
    if device["vehicle_id"] is None:
        return device
    row = await device_admin.set_vehicle(conn, device["id"], None)
    await actor.audit(
        conn, "device.unlink", _target(device), imei=device["imei"], previous_vehicle_id=device["vehicle_id"]
    )
    return row


async def delete_device(conn: asyncpg.Connection, actor: Actor, ref: int | str) -> None:
    """Delete a tracker that has no stored history (one with history is unlinked instead: `device_has_history`)."""
    device = await require_device(conn, ref)
    if await device_admin.has_history(conn, device["id"]):
        raise Conflict(
            f"device {device['id']} (IMEI {device['imei']}) has stored positions or events; "
            "unlink it instead of deleting it",
            code="device_has_history",
        )
    await device_admin.delete_device(conn, device["id"])
    await actor.audit(
        conn, "device.delete", _target(device), imei=device["imei"], vehicle_id=device["vehicle_id"]
    )


async def set_allowed_networks(
    conn: asyncpg.Connection, actor: Actor, ref: int | str, networks: Sequence[str] | None
) -> asyncpg.Record:
    """Restrict the addresses a tracker may connect from (None or []: any address); audited.

    The device port applies it at the tracker's next identification once its cached entry expires (at
    most five minutes); a connection already open stays.
    """
    wanted = normalise_networks(networks)
    device = await require_device(conn, ref)
    row = await device_admin.set_allowed_networks(conn, device["id"], wanted)
    await actor.audit(
        conn,
        "device.allowed_networks",
        _target(device),
        imei=device["imei"],
        previous=device["allowed_networks"],
        networks=wanted,
    )
    return row
