"""`fleet vehicle gps`: show or set which channels of a pull vehicle make its positions (docs/LIVE.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleet.sync.gps import FIELDS


def register(app: typer.Typer) -> None:
    """Add `gps` to the `fleet vehicle` commands."""
    from fleet.cli import vehicle_app

    vehicle_app.command("gps")(vehicle_gps)


def vehicle_gps(
    vehicle: Annotated[int, typer.Option(help="vehicle id")],
    latitude: Annotated[int | None, typer.Option(help="channel id of the latitude (degrees)")] = None,
    longitude: Annotated[int | None, typer.Option(help="channel id of the longitude (degrees)")] = None,
    speed: Annotated[int | None, typer.Option(help="channel id of the speed")] = None,
    course: Annotated[int | None, typer.Option(help="channel id of the course (degrees)")] = None,
    altitude: Annotated[int | None, typer.Option(help="channel id of the altitude")] = None,
    satellites: Annotated[int | None, typer.Option(help="channel id of the satellite count")] = None,
    off: Annotated[bool, typer.Option("--off", help="no positions from this vehicle's channels")] = False,
    auto: Annotated[
        bool, typer.Option("--auto", help="recognise the channels by name and unit again")
    ] = False,
) -> None:
    """Show the GPS channels of a pull vehicle, or map them explicitly (--latitude/--longitude, --off, --auto)."""
    from fleet.cli import fail
    from fleet.db.queries.sync import stored_channels
    from fleet.db.queries.vehicles import require_vehicle
    from fleet.manage import vehicles
    from fleet.manage.cli_common import cli_actor, out, run_in_transaction
    from fleet.sync.gps import recognise

    given = {
        "latitude": latitude,
        "longitude": longitude,
        "speed": speed,
        "course": course,
        "altitude": altitude,
        "satellites": satellites,
    }
    chosen = {name: value for name, value in given.items() if value is not None}
    if sum((bool(chosen), off, auto)) > 1:
        raise fail("give channel ids, or --off, or --auto", 2)
    actor = cli_actor()

    async def action(conn: Any) -> tuple[dict[str, Any] | None, dict[str, int] | None]:
        await require_vehicle(conn, vehicle)
        if chosen or off or auto:
            await vehicles.set_gps_channels(conn, actor, vehicle, {"off": True} if off else (chosen or None))
        mapping = await conn.fetchval("SELECT gps_channels FROM vehicles WHERE id = $1", vehicle)
        found = recognise(await stored_channels(conn, vehicle), mapping)
        return mapping, found.describe() if found is not None else None

    mapping, effective = run_in_transaction(action)
    out(f"mapping: {'explicit ' + str(mapping) if mapping else 'by name and unit'}")
    if effective is None:
        out("positions: none (no latitude/longitude pair among the synced channels)")
    else:
        fields = ", ".join(f"{name}={effective[name]}" for name in FIELDS if name in effective)
        out(f"positions from channels: {fields}")
