"""`fleet user|vehicle|device ...`: the management use cases at the command line.

Every command runs one use case of `fleet.manage` in a system transaction as the CLI actor (audited as
`cli:<os user>`), prints its result on stdout — an id, a key, a table, or JSON with `--json` — and anything
else on stderr, so `ID=$(fleet vehicle add --name T)` captures exactly the id.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

T = TypeVar("T")

device_app = typer.Typer(help="Trackers.", no_args_is_help=True)


def _run(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(conn, actor)` in one system transaction against the server's database."""
    from fleet.cli import _with_db, run_async, settings_or_exit

    settings = settings_or_exit()

    async def in_transaction(db: Any) -> T:
        async with db.system() as conn:
            return await action(conn)

    return run_async(lambda: _with_db(settings, in_transaction))


def _actor() -> Any:
    from fleet.manage.actor import Actor

    return Actor.cli()


def _settings() -> Any:
    from fleet.cli import settings_or_exit

    return settings_or_exit()


def _out(text: str) -> None:
    from fleet.cli import console

    console.print(text, highlight=False, soft_wrap=True)


def _user_ref(value: str) -> int | str:
    return int(value) if value.isascii() and value.isdigit() else value


def _password(password: str | None, generate: bool) -> str:
    from fleet.cli import fail

    if password is not None:
        return password
    if generate:
        return secrets.token_urlsafe(12)
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    raise fail("give --password, or --generate", 2)


def _check_password(password: str, email: str | None) -> None:
    from fleet.cli import fail
    from fleet.errors import FleetError
    from fleet.passwords import check_password

    try:
        check_password(password, email=email)
    except FleetError as err:
        raise fail(str(err), 2) from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from fleet.cli import console

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


# --- users -----------------------------------------------------------------------------------------------------
def user_create(
    email: Annotated[str, typer.Option(help="login e-mail")],
    password: Annotated[
        str | None, typer.Option(help="password (prompted when omitted; generated with --generate)")
    ] = None,
    role: Annotated[str, typer.Option(help="superuser or owner")] = "owner",
    generate: Annotated[bool, typer.Option("--generate", help="generate a password and print it")] = False,
) -> None:
    """Create an active user."""
    from fleet.cli import fail
    from fleet.manage import users

    if role not in ("superuser", "owner"):
        raise fail(f"unknown role {role!r}: use superuser or owner", 2)
    secret = _password(password, generate)
    _check_password(secret, email)
    actor = _actor()

    async def action(conn: Any) -> Any:
        return await users.create_active_user(conn, actor, email=email, password=secret, role=role)

    row = _run(action)
    _out(f"created {row['role']} {row['email']} (id {row['id']})")
    if generate:
        _out(f"password: {secret}")


def user_list(
    status: Annotated[str | None, typer.Option(help="pending, active or blocked")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List users."""
    from fleet.db.queries.accounts import list_users

    async def action(conn: Any) -> list[dict[str, Any]]:
        rows, _ = await list_users(conn, status=status, limit=100_000, offset=0)
        return [dict(r) for r in rows]

    rows = _run(action)
    if as_json:
        for row in rows:
            _out(json.dumps(row, default=str))
    else:
        _table(rows, ["id", "email", "role", "status", "created_at", "last_login_at"])


def _status_command(use_case: str, verb: str, doc: str) -> Callable[..., None]:
    """A command running `fleet.manage.users.<use_case>(conn, actor[, settings], user)`."""

    def command(user: Annotated[str, typer.Argument(help="user id or e-mail")]) -> None:
        from fleet.manage import users

        actor, settings = _actor(), _settings()

        async def action(conn: Any) -> Any:
            if use_case == "approve":
                return await users.approve(conn, actor, settings, _user_ref(user))
            run: Callable[..., Awaitable[Any]] = getattr(users, use_case)
            return await run(conn, actor, _user_ref(user))

        row = _run(action)
        _out(f"{row['email']} (id {row['id']}) {verb}: status {row['status']}")

    command.__doc__ = doc
    return command


def user_set_password(
    user: Annotated[str, typer.Argument(help="user id or e-mail")],
    password: Annotated[str | None, typer.Option(help="new password (prompted when omitted)")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="generate a password and print it")] = False,
) -> None:
    """Set a user's password (the policy applies); their sessions end and they get an e-mail."""
    from fleet.manage import users

    secret = _password(password, generate)
    actor, settings = _actor(), _settings()

    async def action(conn: Any) -> Any:
        return await users.reset_password(conn, actor, settings, _user_ref(user), secret)

    row = _run(action)
    _out(f"password of {row['email']} (id {row['id']}) set; their sessions were ended")
    if generate:
        _out(f"password: {secret}")


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
    actor = _actor()

    async def action(conn: Any) -> Any:
        owner_ids = [(await require_user(conn, _user_ref(ref)))["id"] for ref in owner or []]
        row = await vehicles.create_vehicle(
            conn, actor, name=name, vpn_ip=vpn_ip, api_port=api_port, api_key=api_key, owner_ids=owner_ids
        )
        if imei is not None:
            await devices.link_by_imei(conn, actor, imei, protocol=protocol, vehicle_id=row["id"], move=move)
        return row

    _out(str(_run(action)["id"]))


def vehicle_list(
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON instead of a table")] = False,
) -> None:
    """List vehicles with their status and trackers."""
    from fleet.db.queries import vehicle_views

    settings = _settings()

    async def action(conn: Any) -> bytes:
        window = vehicle_views.online_window_sec(settings.sync_interval_sec)
        return await vehicle_views.vehicles_page(conn, window_sec=window, limit=100_000, offset=0)

    body = json.loads(_run(action))
    if as_json:
        _out(json.dumps(body["items"]))
        return
    for item in body["items"]:
        item["trackers"] = " ".join(d["imei"] for d in item["devices"])
    _table(body["items"], ["id", "name", "status", "sync_status", "last_activity_at", "trackers"])


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
    actor = _actor()

    async def action(conn: Any) -> Any:
        return await vehicles.edit_vehicle(conn, actor, vehicle, changes)

    row = _run(action)
    address = f"{row['vpn_ip']}:{row['api_port']}" if row["vpn_ip"] is not None else "not pulled"
    _out(f"vehicle {row['id']}: {row['name']} ({address})")


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
    actor = _actor()

    async def action(conn: Any) -> None:
        await vehicles.delete_vehicle(conn, actor, vehicle)

    _run(action)
    _out(f"vehicle {vehicle} deleted")


def vehicle_assign(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    user: Annotated[str, typer.Option(help="user id or e-mail")],
) -> None:
    """Grant a user access to a vehicle."""
    from fleet.manage import vehicles

    actor = _actor()

    async def action(conn: Any) -> tuple[Any, bool]:
        return await vehicles.assign(conn, actor, vehicle, _user_ref(user))

    _, granted = _run(action)
    _out(f"{user} {'now has' if granted else 'already had'} access to vehicle {vehicle}")


def vehicle_unassign(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    user: Annotated[str, typer.Option(help="user id or e-mail")],
) -> None:
    """Take a vehicle away from a user."""
    from fleet.manage import vehicles

    actor = _actor()

    async def action(conn: Any) -> Any:
        return await vehicles.remove_access(conn, actor, vehicle, _user_ref(user))

    _run(action)
    _out(f"{user} no longer has access to vehicle {vehicle}")


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

    actor = _actor()

    async def action(conn: Any) -> Any:
        return await devices.link_by_imei(conn, actor, imei, protocol=protocol, vehicle_id=vehicle, move=move)

    row = _run(action)
    _out(f"tracker {row['imei']} (device {row['id']}) is on vehicle {row['vehicle_id']}")


def vehicle_unlink(imei: Annotated[str, typer.Option(help="the tracker's IMEI")]) -> None:
    """Take a tracker off its vehicle."""
    from fleet.manage import devices

    actor = _actor()

    async def action(conn: Any) -> Any:
        return await devices.unlink_device(conn, actor, imei.strip())

    row = _run(action)
    _out(f"tracker {row['imei']} (device {row['id']}) is on no vehicle")


def vehicle_set_key(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    key: Annotated[str | None, typer.Option(help="the key configured on the vehicle")] = None,
    default: Annotated[bool, typer.Option("--default", help="clear it: use VEHICLE_DEFAULT_API_KEY")] = False,
) -> None:
    """Set the vehicle's Outbound API key; without --key one is generated and printed (once)."""
    from fleet.manage import vehicles

    actor = _actor()

    async def action(conn: Any) -> str | None:
        return await vehicles.set_api_key(conn, actor, vehicle, key, use_default=default)

    generated = _run(action)
    if generated is not None:
        _out(generated)
    else:
        print(f"vehicle {vehicle}: API key {'cleared' if default else 'set'}", file=sys.stderr)


def vehicle_sync(
    vehicle: Annotated[int, typer.Argument(help="vehicle id")],
    limit: Annotated[int, typer.Option(help="journal entries")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON")] = False,
) -> None:
    """Show a vehicle's sync state, why it is not online, and its latest journal entries."""
    from fleet.manage.sync_state import describe_sync

    settings = _settings()

    async def action(conn: Any) -> dict[str, Any]:
        return await describe_sync(conn, settings, vehicle, limit=limit)

    state = _run(action)
    if as_json:
        _out(json.dumps(state))
        return
    _out(f"vehicle {vehicle}: {state['status']} (sync {state['sync_status']}, key: {state['api_key']})")
    if state["reason"]:
        _out(f"reason: {state['reason']}")
    _table(state["journal"], ["started_at", "status", "rows_written", "duration_ms", "error"])


# --- devices ---------------------------------------------------------------------------------------------------
@device_app.command("add")
def device_add(
    imei: Annotated[str, typer.Option(help="the tracker's IMEI")],
    protocol: Annotated[str, typer.Option(help="navtelecom or teltonika")] = "navtelecom",
    vehicle: Annotated[int | None, typer.Option(help="vehicle id to link it to")] = None,
) -> None:
    """Pre-register a tracker (production refuses unknown ones) and print its id."""
    from fleet.manage import devices

    actor = _actor()

    async def action(conn: Any) -> Any:
        return await devices.register_device(conn, actor, imei=imei, protocol=protocol, vehicle_id=vehicle)

    _out(str(_run(action)["id"]))


@device_app.command("list")
def device_list(
    unlinked: Annotated[bool, typer.Option("--unlinked", help="only trackers on no vehicle")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON")] = False,
) -> None:
    """List trackers with their vehicle and last connection."""
    from fleet.db.queries import device_admin, vehicle_views

    settings = _settings()

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

    items = json.loads(_run(action))["items"]
    if as_json:
        _out(json.dumps(items))
        return
    _table(items, ["id", "imei", "protocol", "vehicle_id", "vehicle_name", "status", "last_connected_at"])


@device_app.command("delete")
def device_delete(imei: Annotated[str, typer.Option(help="the tracker's IMEI")]) -> None:
    """Delete a tracker that has no stored history (else unlink it)."""
    from fleet.manage import devices

    actor = _actor()

    async def action(conn: Any) -> None:
        await devices.delete_device(conn, actor, imei.strip())

    _run(action)
    _out(f"tracker {imei.strip()} deleted")


def register(app: typer.Typer) -> None:
    """Add the management commands to the `user` and `vehicle` groups and a `device` group."""
    from fleet.cli import user_app, vehicle_app

    user_app.command("create")(user_create)
    user_app.command("list")(user_list)
    for name, verb, doc in (
        ("approve", "approved", "Activate a pending account (the owner gets an e-mail)."),
        ("block", "blocked", "Block an account: its sessions and API keys are revoked for good."),
        ("unblock", "unblocked", "Give a blocked account back; its old sessions and API keys stay revoked."),
    ):
        user_app.command(name)(_status_command(name, verb, doc))
    user_app.command("set-password")(user_set_password)
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
    app.add_typer(device_app, name="device")
