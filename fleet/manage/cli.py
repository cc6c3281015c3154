"""`fleet vehicle|device ...` and the registration of every management command (users: `cli_users`).

Every command runs one use case of `fleet.manage` in a system transaction as the CLI actor (audited as
`cli:<os user>`), prints its result on stdout — an id, a key, a table, or JSON with `--json` — and anything
else on stderr, so `ID=$(fleet vehicle add --name T)` captures exactly the id.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from fleet.manage.cli_common import cli_actor, cli_settings, out, run_in_transaction, table, user_ref
from fleet.manage.cli_devices import register_device_commands
from fleet.manage.cli_users import register_user_commands

device_app = typer.Typer(help="Trackers.", no_args_is_help=True)


# --- vehicles --------------------------------------------------------------------------------------------------
def vehicle_add(
    name: Annotated[str, typer.Option(help="display name (unique among each owner's vehicles)")],
    imei: Annotated[str | None, typer.Option(help="IMEI of the tracker installed in the vehicle")] = None,
    protocol: Annotated[
        str, typer.Option(help="the tracker's protocol: navtelecom or teltonika")
    ] = "navtelecom",
    move: Annotated[
        bool, typer.Option("--move", help="take the tracker from the vehicle it is on (else refused)")
    ] = False,
    vpn_ip: Annotated[str | None, typer.Option(help="address of the vehicle's Outbound API")] = None,
    api_port: Annotated[int, typer.Option(help="port of the vehicle's Outbound API")] = 8001,
    api_key: Annotated[str | None, typer.Option(help="X-API-Key of the vehicle (else the default)")] = None,
    owner: Annotated[list[str] | None, typer.Option(help="give access to this user (id or e-mail)")] = None,
) -> None:
    """Register a vehicle (and link its tracker) and print its id."""
    from fleet.cli import fail
    from fleet.errors import FleetError
    from fleet.manage import devices, vehicles
    from fleet.manage.users import require_user

    try:
        if imei is not None:
            imei = devices.validate_imei(imei, protocol)
    except FleetError as err:
        raise fail(str(err), 2) from None
    actor = cli_actor()

    async def action(conn: Any) -> Any:
        owner_ids = [(await require_user(conn, user_ref(ref)))["id"] for ref in owner or []]
        row = await vehicles.create_vehicle(
            conn, actor, name=name, vpn_ip=vpn_ip, api_port=api_port, api_key=api_key, owner_ids=owner_ids
        )
        if imei is not None:
            await devices.link_by_imei(conn, actor, imei, protocol=protocol, vehicle_id=row["id"], move=move)
        return row

    out(str(run_in_transaction(action)["id"]))


def vehicle_list(
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON instead of a table")] = False,
) -> None:
    """List vehicles with their status and trackers."""
    from fleet.db.queries import vehicle_views

    settings = cli_settings()

    async def action(conn: Any) -> bytes:
        window = vehicle_views.online_window_sec(settings.sync_interval_sec)
        return await vehicle_views.vehicles_page(conn, window_sec=window, limit=100_000, offset=0)

    body = json.loads(run_in_transaction(action))
    if as_json:
        out(json.dumps(body["items"]))
        return
    for item in body["items"]:
        item["trackers"] = " ".join(d["imei"] for d in item["devices"])
    table(body["items"], ["id", "name", "status", "sync_status", "last_activity_at", "trackers"])


def vehicle_edit(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    vpn_ip: Annotated[str | None, typer.Option(help="new Outbound API address")] = None,
    no_vpn_ip: Annotated[bool, typer.Option("--no-vpn-ip", help="clear the address: stop pulling")] = False,
    api_port: Annotated[int | None, typer.Option(help="new Outbound API port")] = None,
) -> None:
    """Change a vehicle's name, address or port."""
    from fleet.cli import fail
    from fleet.manage import vehicles

    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if vpn_ip is not None or no_vpn_ip:
        if vpn_ip is not None and no_vpn_ip:
            raise fail("give --vpn-ip or --no-vpn-ip, not both", 2)
        changes["vpn_ip"] = vpn_ip
    if api_port is not None:
        changes["api_port"] = api_port
    if not changes:
        raise fail("nothing to change: give --name, --vpn-ip, --no-vpn-ip or --api-port", 2)
    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await vehicles.edit_vehicle(conn, actor, vehicle, changes)

    row = run_in_transaction(action)
    address = f"{row['vpn_ip']}:{row['api_port']}" if row["vpn_ip"] is not None else "not pulled"
    out(f"vehicle {row['id']}: {row['name']} ({address})")


def vehicle_delete(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Delete a vehicle (trackers unlinked; its time series stay until retention)."""
    from fleet.cli import fail
    from fleet.manage import vehicles

    if not yes:
        if not sys.stdin.isatty():
            raise fail("add --yes to delete without a question", 2)
        typer.confirm(f"delete vehicle {vehicle}?", abort=True, err=True)
    actor = cli_actor()

    async def action(conn: Any) -> None:
        await vehicles.delete_vehicle(conn, actor, vehicle)

    run_in_transaction(action)
    out(f"vehicle {vehicle} deleted")


def vehicle_assign(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    user: Annotated[str, typer.Option(help="user id or e-mail")],
) -> None:
    """Grant a user access to a vehicle."""
    from fleet.manage import vehicles

    actor = cli_actor()

    async def action(conn: Any) -> tuple[Any, bool]:
        return await vehicles.assign(conn, actor, vehicle, user_ref(user))

    _, granted = run_in_transaction(action)
    out(f"{user} {'now has' if granted else 'already had'} access to vehicle {vehicle}")


def vehicle_unassign(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    user: Annotated[str, typer.Option(help="user id or e-mail")],
) -> None:
    """Take a vehicle away from a user."""
    from fleet.manage import vehicles

    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await vehicles.remove_access(conn, actor, vehicle, user_ref(user))

    run_in_transaction(action)
    out(f"{user} no longer has access to vehicle {vehicle}")


def vehicle_link(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    imei: Annotated[str, typer.Option(help="the tracker's IMEI (registered now if new)")],
    protocol: Annotated[str, typer.Option(help="protocol of a new tracker")] = "navtelecom",
    move: Annotated[
        bool, typer.Option("--move", help="take the tracker from the vehicle it is on (else refused)")
    ] = False,
) -> None:
    """Link a tracker to a vehicle."""
    from fleet.manage import devices

    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await devices.link_by_imei(conn, actor, imei, protocol=protocol, vehicle_id=vehicle, move=move)

    row = run_in_transaction(action)
    out(f"tracker {row['imei']} (device {row['id']}) is on vehicle {row['vehicle_id']}")


def vehicle_unlink(imei: Annotated[str, typer.Option(help="the tracker's IMEI")]) -> None:
    """Take a tracker off its vehicle."""
    from fleet.manage import devices

    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await devices.unlink_device(conn, actor, imei.strip())

    row = run_in_transaction(action)
    out(f"tracker {row['imei']} (device {row['id']}) is on no vehicle")


def vehicle_set_key(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    key: Annotated[str | None, typer.Option(help="the key configured on the vehicle")] = None,
    default: Annotated[bool, typer.Option("--default", help="clear it: use VEHICLE_DEFAULT_API_KEY")] = False,
) -> None:
    """Set the vehicle's Outbound API key; without --key one is generated and printed (once)."""
    from fleet.manage import vehicles

    actor = cli_actor()

    async def action(conn: Any) -> str | None:
        return await vehicles.set_api_key(conn, actor, vehicle, key, use_default=default)

    generated = run_in_transaction(action)
    if generated is not None:
        out(generated)
    else:
        print(f"vehicle {vehicle}: API key {'cleared' if default else 'set'}", file=sys.stderr)


def vehicle_sync(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    limit: Annotated[int, typer.Option(help="journal entries")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON")] = False,
) -> None:
    """Show a vehicle's sync state, why it is not online, and its latest journal entries."""
    from fleet.manage.sync_state import describe_sync

    settings = cli_settings()

    async def action(conn: Any) -> dict[str, Any]:
        return await describe_sync(conn, settings, vehicle, limit=limit)

    state = run_in_transaction(action)
    if as_json:
        out(json.dumps(state))
        return
    out(f"vehicle {vehicle}: {state['status']} (sync {state['sync_status']}, key: {state['api_key']})")
    if state["reason"]:
        out(f"reason: {state['reason']}")
    table(state["journal"], ["started_at", "status", "rows_written", "duration_ms", "error"])


# --- devices ---------------------------------------------------------------------------------------------------
@device_app.command("add")
def device_add(
    imei: Annotated[str, typer.Option(help="the tracker's IMEI")],
    protocol: Annotated[str, typer.Option(help="navtelecom or teltonika")] = "navtelecom",
    vehicle: Annotated[int | None, typer.Option(help="vehicle id to link it to")] = None,
) -> None:
    """Pre-register a tracker (production refuses unknown ones) and print its id."""
    from fleet.manage import devices

    actor = cli_actor()

    async def action(conn: Any) -> Any:
        return await devices.register_device(conn, actor, imei=imei, protocol=protocol, vehicle_id=vehicle)

    out(str(run_in_transaction(action)["id"]))


@device_app.command("list")
def device_list(
    unlinked: Annotated[bool, typer.Option("--unlinked", help="only trackers on no vehicle")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON")] = False,
) -> None:
    """List trackers with their vehicle and last connection."""
    from fleet.db.queries import device_admin, vehicle_views

    settings = cli_settings()

    async def action(conn: Any) -> bytes:
        return await device_admin.admin_devices_page(
            conn,
            window_sec=vehicle_views.online_window_sec(settings.sync_interval_sec),
            linked=False if unlinked else None,
            vehicle_id=None,
            protocol=None,
            imei=None,
            status=None,
            limit=100_000,
            offset=0,
        )

    items = json.loads(run_in_transaction(action))["items"]
    if as_json:
        out(json.dumps(items))
        return
    table(items, ["id", "imei", "protocol", "vehicle_id", "vehicle_name", "status", "last_connected_at"])


@device_app.command("delete")
def device_delete(imei: Annotated[str, typer.Option(help="the tracker's IMEI")]) -> None:
    """Delete a tracker that has no stored history (else unlink it)."""
    from fleet.manage import devices

    actor = cli_actor()

    async def action(conn: Any) -> None:
        await devices.delete_device(conn, actor, imei.strip())

    run_in_transaction(action)
    out(f"tracker {imei.strip()} deleted")


def register(app: typer.Typer) -> None:
    """Add the management commands to the `user` and `vehicle` groups and a `device` group."""
    from fleet.cli import user_app, vehicle_app

    register_user_commands(user_app)
    for command, function in (
        ("add", vehicle_add),
        ("list", vehicle_list),
        ("edit", vehicle_edit),
        ("delete", vehicle_delete),
        ("assign", vehicle_assign),
        ("unassign", vehicle_unassign),
        ("link", vehicle_link),
        ("unlink", vehicle_unlink),
        ("set-key", vehicle_set_key),
        ("sync", vehicle_sync),
    ):
        vehicle_app.command(command)(function)
    register_device_commands(device_app)
    app.add_typer(device_app, name="device")
