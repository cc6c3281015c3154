"""`fleet device command|commands|allow|security-events`: tracker commands, allow-lists and security events.

Thin commands over the use cases (`fleet.device_commands.queue_command`, `fleet.manage.devices`): results
on stdout (a command id, a table, or JSON with `--json`), everything else on stderr. A queued command is
announced on the live bus after the commit, so the ingest process holding the tracker sends it at once;
without the announcement its sweep finds it within seconds.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from fleet.manage.cli_common import cli_actor, cli_settings, out, run_in_transaction, table

COMMAND_TYPES = ("custom", "output", "request_position", "reboot", "resend_archive")
COMMAND_COLUMNS = ["id", "type", "payload", "status", "answer", "error", "created_at", "finished_at"]
EVENT_COLUMNS = ["id", "kind", "last_at", "count", "imei", "protocol", "peer"]


def _jsonable(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dict(row).items()}


def _print_rows(rows: list[Any], columns: list[str], as_json: bool) -> None:
    items = [_jsonable(row) for row in rows]
    if as_json:
        out(json.dumps(items))
    else:
        table(items, columns)


def _build_command(
    kind: str, text: str | None, output: int | None, on: bool | None, start: str | None, end: str | None
) -> Any:
    from fleet.cli import fail
    from fleet.protocol.base import CustomCommand, OutputCommand, Reboot, RequestPosition, ResendArchive

    if kind == "custom":
        if not text:
            raise fail("--type custom needs --text", 2)
        return CustomCommand(text)
    if kind == "output":
        if output is None or on is None:
            raise fail("--type output needs --output N and --on or --off", 2)
        return OutputCommand(output, on)
    if kind == "resend_archive":
        if start is None or end is None:
            raise fail("--type resend_archive needs --from and --to (ISO 8601 times)", 2)
        try:
            first, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
        except ValueError as err:
            raise fail(f"--from/--to: {err}", 2) from None
        if last <= first:
            raise fail("--to must be after --from", 2)
        return ResendArchive(first, last)
    if kind == "reboot":
        return Reboot()
    if kind == "request_position":
        return RequestPosition()
    raise fail(f"--type must be one of: {', '.join(COMMAND_TYPES)}", 2)


def device_command(
    imei: Annotated[str, typer.Argument(help="the tracker's IMEI (or device id)")],
    kind: Annotated[str, typer.Option("--type", help=f"one of: {', '.join(COMMAND_TYPES)}")],
    text: Annotated[str | None, typer.Option(help="custom: the command text (e.g. '*?V', 'getver')")] = None,
    output: Annotated[int | None, typer.Option(help="output: the output number")] = None,
    on: Annotated[bool | None, typer.Option("--on/--off", help="output: switch it on or off")] = None,
    start: Annotated[str | None, typer.Option("--from", help="resend_archive: first time (ISO 8601)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="resend_archive: last time (ISO 8601)")] = None,
    expires_in: Annotated[
        float | None, typer.Option(help="seconds to wait for the tracker (default DEVICE_COMMAND_TTL_SEC)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the command as JSON")] = False,
) -> None:
    """Queue a command for a tracker (sent when it is online) and print the command's id."""
    from fleet.cli import _with_db, fail, run_async
    from fleet.device_commands import queue_command

    command = _build_command(kind, text, output, on, start, end)
    if expires_in is not None and expires_in <= 0:
        raise fail("--expires-in must be positive", 2)
    settings = cli_settings()
    actor = cli_actor()

    async def queue_and_announce(db: Any) -> Any:
        async with db.system() as conn:
            row = await queue_command(
                conn,
                actor,
                imei.strip(),
                command,
                owners_allowed=settings.device_commands_owners_allowed,
                ttl_sec=expires_in or settings.device_command_ttl_sec,
            )
        await _announce(settings, db, row)  # after the commit: the ingest role must find the row
        return row

    row = run_async(lambda: _with_db(settings, queue_and_announce))
    out(json.dumps(_jsonable(row)) if as_json else str(row["id"]))


async def _announce(settings: Any, db: Any, row: Any) -> None:
    """Tell the ingest processes about the new command (best effort: their sweep finds it anyway)."""
    from fleet.cli import err_console
    from fleet.device_commands import BUS_TOPIC, bus_payload
    from fleet.ops.bus import create_bus

    bus = create_bus(settings, db)
    try:
        await bus.start()
        await bus.publish(BUS_TOPIC, bus_payload(row))
    except Exception as err:  # the command is stored; only its prompt delivery depends on the bus
        err_console.print(f"[dim]not announced on the bus ({err}); the ingest sweep sends it[/]")
    finally:
        await bus.close()


def device_commands(
    imei: Annotated[str, typer.Argument(help="the tracker's IMEI (or device id)")],
    status: Annotated[str | None, typer.Option(help="queued, sent, answered, failed or expired")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="newest N")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """List a tracker's commands, newest first."""
    from fleet.db.queries import device_commands as commands_q
    from fleet.db.queries.device_api import resolve_device
    from fleet.errors import NotFound

    async def action(conn: Any) -> list[Any]:
        device = await resolve_device(conn, imei.strip())
        if device is None:
            raise NotFound(f"no device {imei.strip()}")
        rows, _total = await commands_q.list_commands(
            conn, device["id"], status=status, limit=limit, offset=0
        )
        return rows

    _print_rows(run_in_transaction(action), COMMAND_COLUMNS, as_json)


def device_allow(
    imei: Annotated[str, typer.Argument(help="the tracker's IMEI (or device id)")],
    network: Annotated[
        list[str] | None, typer.Option(help="a network it may connect from (CIDR); repeat for several")
    ] = None,
    anywhere: Annotated[bool, typer.Option("--any", help="remove the restriction")] = False,
) -> None:
    """Set the networks a tracker may connect from; connections from elsewhere are refused and logged."""
    from fleet.cli import fail
    from fleet.manage import devices

    if anywhere == bool(network):
        raise fail("give --network (one or more) or --any", 2)
    actor = cli_actor()
    ref: int | str = int(imei) if imei.isascii() and imei.isdigit() and len(imei) < 15 else imei.strip()

    async def action(conn: Any) -> Any:
        return await devices.set_allowed_networks(conn, actor, ref, None if anywhere else network)

    row = run_in_transaction(action)
    networks = row["allowed_networks"]
    out(f"tracker {row['imei']} may connect from {', '.join(networks) if networks else 'any address'}")


def security_events(
    kind: Annotated[str | None, typer.Option(help="takeover_refused or device_address_refused")] = None,
    imei: Annotated[str | None, typer.Option(help="only this tracker")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="newest N")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON")] = False,
) -> None:
    """List device-port security events (refused takeovers, trackers outside their allow-list)."""
    from fleet.db.queries import security_events as events_q

    async def action(conn: Any) -> list[Any]:
        rows, _total = await events_q.list_events(conn, limit=limit, offset=0, kind=kind, imei=imei)
        return rows

    _print_rows(run_in_transaction(action), EVENT_COLUMNS, as_json)


def register_device_commands(device_app: typer.Typer) -> None:
    """Add these commands to the `device` group."""
    device_app.command("command")(device_command)
    device_app.command("commands")(device_commands)
    device_app.command("allow")(device_allow)
    device_app.command("security-events")(security_events)
