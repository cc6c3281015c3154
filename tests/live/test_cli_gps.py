"""`fleet vehicle gps`: show and set the GPS channel mapping of a pull vehicle, as a real process."""

from __future__ import annotations

import asyncpg

from tests.foundation.conftest import cli_env, fleet

__all__ = ["cli_env"]


async def test_show_map_turn_off_and_back(cli_env: dict[str, str], owner_conn: asyncpg.Connection) -> None:
    vehicle = await owner_conn.fetchval("INSERT INTO vehicles (name) VALUES ('gps-cli') RETURNING id")
    await owner_conn.executemany(
        "INSERT INTO channel_config (vehicle_id, channel_id, name, unit) VALUES ($1, $2, $3, $4)",
        [(vehicle, 16, "latitude", "°"), (vehicle, 17, "longitude", "°"), (vehicle, 5, "x", None)],
    )
    shown = fleet(cli_env, "vehicle", "gps", "--vehicle", str(vehicle))
    assert shown.returncode == 0, shown.stderr
    assert "by name and unit" in shown.stdout and "latitude=16, longitude=17" in shown.stdout

    mapped = fleet(
        cli_env, "vehicle", "gps", "--vehicle", str(vehicle), "--latitude", "5", "--longitude", "17"
    )
    assert mapped.returncode == 0 and "latitude=5, longitude=17" in mapped.stdout
    assert await owner_conn.fetchval("SELECT gps_channels FROM vehicles WHERE id = $1", vehicle) == (
        '{"latitude": 5, "longitude": 17}'
    )
    audited = await owner_conn.fetchrow(
        "SELECT actor_email, details FROM admin_audit_log WHERE action = 'vehicle.gps_channels' AND target = $1",
        f"vehicle:{vehicle}",
    )
    assert audited["actor_email"].startswith("cli:") and '"latitude": 5' in audited["details"]
    off = fleet(cli_env, "vehicle", "gps", "--vehicle", str(vehicle), "--off")
    assert off.returncode == 0 and "positions: none" in off.stdout
    auto = fleet(cli_env, "vehicle", "gps", "--vehicle", str(vehicle), "--auto")
    assert auto.returncode == 0 and "latitude=16" in auto.stdout
    assert await owner_conn.fetchval("SELECT gps_channels FROM vehicles WHERE id = $1", vehicle) is None

    half = fleet(cli_env, "vehicle", "gps", "--vehicle", str(vehicle), "--latitude", "5")
    assert half.returncode != 0 and "latitude and a longitude" in half.stderr
    missing = fleet(cli_env, "vehicle", "gps", "--vehicle", "999999999")
    assert missing.returncode != 0 and "no vehicle" in missing.stderr
