"""`fleet wireguard init` and `fleet wireguard add-vehicle ID`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

wireguard_app = typer.Typer(
    help="WireGuard VPN to the vehicles (server 10.0.0.1, vehicles from .11).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `wireguard` command group to `app`."""
    app.add_typer(wireguard_app, name="wireguard")


@wireguard_app.command("init")
def init_command() -> None:
    """Create the server's keys (kept if they exist) and write its wg0.conf."""
    from fleet.cli import console, fail, settings_or_exit
    from fleet.errors import FleetError
    from fleet.ops.wireguard.service import Paths, init_server

    settings = settings_or_exit()
    try:
        state, created = init_server(settings)
    except FleetError as err:
        raise fail(str(err), err.exit_code) from None
    paths = Paths.of(settings)
    iface = settings.wireguard_interface
    console.print(
        f"{'created' if created else 'kept the existing'} server keys; wrote {paths.server_conf}\n"
        f"  address {state.server.address}, UDP port {state.server.port}, public key {state.server.public_key}\n"
        f"  install: sudo install -m 600 {paths.server_conf} /etc/wireguard/{iface}.conf && "
        f"sudo systemctl enable --now wg-quick@{iface}\n"
        f"  open UDP {state.server.port} in the firewall (the only port besides nginx and the device ports)",
        highlight=False,
    )


@wireguard_app.command("add-vehicle")
def add_vehicle_command(
    vehicle_id: Annotated[int, typer.Argument(metavar="ID", help="vehicle id (from `fleet vehicle add`)")],
) -> None:
    """Give a vehicle the next free VPN address, set its vpn_ip, print its router's peer config."""
    from fleet.cli import _with_db, console, run_async, settings_or_exit
    from fleet.ops.wireguard.service import add_vehicle

    settings = settings_or_exit()

    async def action(db: Any) -> Any:
        async with db.system() as conn:
            return await add_vehicle(conn, settings, vehicle_id)

    result = run_async(lambda: _with_db(settings, action))
    iface = settings.wireguard_interface
    state = "new peer" if result.created else "existing peer (unchanged)"
    typer.echo(result.vehicle_config, nl=False)
    console.print(
        f"# {state}: vehicle {vehicle_id} → {result.peer.address}; config kept in {result.config_path}\n"
        f"# on the server: sudo install -m 600 {settings.wireguard_path / (iface + '.conf')} /etc/wireguard/ && "
        f"sudo wg syncconf {iface} <(sudo wg-quick strip {iface})",
        highlight=False,
        soft_wrap=True,
    )
