"""Device commands as use cases: queue one for a tracker (checked, audited), list them, their bus payload.

One function per action, shared by the HTTP API and the CLI (STYLE 19). Storage is ``device_commands``
(:mod:`fleet.db.queries.device_commands`); sending is the ingest role's (:mod:`fleet.ingest.commands`):
a command is written to the tracker at once when it is connected, otherwise after its next login, under
its protocol's rules; every status change is published on bus topic ``commands``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from fleet.db.queries import device_commands as commands_q
from fleet.db.queries.device_api import resolve_device
from fleet.errors import FleetError, InvalidInput, NotFound
from fleet.manage.actor import Actor
from fleet.protocol.base import (
    Command,
    CustomCommand,
    OutputCommand,
    Reboot,
    RequestPosition,
    ResendArchive,
    UnsupportedCommand,
)
from fleet.protocol.registry import get_protocol

__all__ = [
    "BUS_TOPIC",
    "COMMANDS_TOTAL",
    "CommandNotAllowed",
    "CommandUnsupported",
    "bus_payload",
    "command_from_payload",
    "payload_of",
    "queue_command",
]

BUS_TOPIC = "commands"
MAX_COMMAND_TEXT = 512

COMMANDS_TOTAL = Counter(
    "fleet_device_commands_total", "Device command status changes", ["protocol", "status"]
)


class CommandUnsupported(InvalidInput):
    """The device's protocol cannot carry the command (HTTP 422)."""


class CommandNotAllowed(FleetError):
    """The caller may not command this device (HTTP 403)."""


def payload_of(command: Command) -> dict[str, Any]:
    """Return the stored JSON form of a command's arguments."""
    if isinstance(command, CustomCommand):
        return {"text": command.text}
    if isinstance(command, OutputCommand):
        return {"index": command.index, "on": command.on}
    if isinstance(command, ResendArchive):
        return {"from": command.start.isoformat(), "to": command.end.isoformat()}
    return {}


def command_from_payload(kind: str, payload: Mapping[str, Any] | str | None) -> Command:
    """Rebuild a command from its stored type and payload (raises UnsupportedCommand for unknown types)."""
    import json

    data: Mapping[str, Any] = json.loads(payload) if isinstance(payload, str) else (payload or {})
    if kind == "custom":
        return CustomCommand(str(data["text"]))
    if kind == "output":
        return OutputCommand(int(data["index"]), bool(data["on"]))
    if kind == "request_position":
        return RequestPosition()
    if kind == "reboot":
        return Reboot()
    if kind == "resend_archive":
        return ResendArchive(datetime.fromisoformat(data["from"]), datetime.fromisoformat(data["to"]))
    raise UnsupportedCommand(f"unknown command type {kind!r}")


def bus_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``commands`` bus payload of a command row (INTERFACES §1)."""
    moments = [row.get("finished_at"), row.get("sent_at"), row.get("created_at")]
    when = next((moment for moment in moments if moment is not None), datetime.now(UTC))
    return {
        "type": "command",
        "command_id": row["id"],
        "device_id": row["device_id"],
        "vehicle_id": row["vehicle_id"],
        "status": row["status"],
        "answer": row["answer"],
        "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


async def queue_command(
    conn: asyncpg.Connection,
    actor: Actor,
    device_ref: str,
    command: Command,
    *,
    owners_allowed: bool,
    ttl_sec: float,
) -> asyncpg.Record:
    """Queue ``command`` for a tracker (by id or IMEI) in the caller's transaction, and audit it.

    Superusers may command any tracker; owners only when ``owners_allowed`` and only the trackers of
    their own vehicles (the device lookup and the insert both run under RLS). A command the tracker's
    protocol cannot carry raises :class:`CommandUnsupported`.
    """
    if actor.role != "superuser" and not owners_allowed:
        raise CommandNotAllowed("device commands are reserved to superusers on this server")
    device = await resolve_device(conn, device_ref)
    if device is None:
        raise NotFound(f"no device {device_ref}")
    if actor.role != "superuser" and device["vehicle_id"] is None:
        raise CommandNotAllowed("this tracker is not assigned to one of your vehicles")
    if isinstance(command, CustomCommand) and not 0 < len(command.text) <= MAX_COMMAND_TEXT:
        raise CommandUnsupported(f"command text must be 1..{MAX_COMMAND_TEXT} characters")
    protocol = device["protocol"]
    try:
        spec = get_protocol(protocol)
    except FleetError as err:
        raise CommandUnsupported(f"the tracker's protocol {protocol!r} is not known to this server") from err
    if command.type not in spec.commands.supported:
        raise CommandUnsupported(
            f"{spec.title} ({spec.name}) trackers do not support '{command.type}' commands"
        )
    try:
        spec.check_command(command)
    except UnsupportedCommand as err:
        raise CommandUnsupported(f"{spec.title} ({spec.name}): {err}") from err
    row = await commands_q.insert_command(
        conn,
        device_id=device["id"],
        vehicle_id=device["vehicle_id"],
        protocol=spec.name,
        type=command.type,
        payload=payload_of(command),
        requested_by=actor.user_id,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl_sec),
    )
    await actor.audit(
        conn,
        "device.command",
        f"device:{device['id']}",
        command_id=row["id"],
        type=command.type,
        **payload_of(command),
    )
    COMMANDS_TOTAL.labels(spec.name, "queued").inc()
    return row
