"""`fleet wireguard`: seed 001 addressing, keys that `wg` agrees with, configs parsed back, vpn_ip written."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.errors import ConfigError, NotFound
from fleet.ops.wireguard.config import WireGuardState
from fleet.ops.wireguard.keys import generate_keypair, generate_preshared_key, public_key_of
from fleet.ops.wireguard.service import Paths, add_vehicle, init_server


def parse_wg(text: str) -> list[tuple[str, dict[str, str]]]:
    """Sections of a wg-quick config in order (`[Peer]` repeats, so configparser will not do)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}))
            continue
        key, _, value = line.partition("=")
        assert sections, f"key outside a section: {raw!r}"
        assert key.strip() not in sections[-1][1], f"duplicate key {key!r}"
        sections[-1][1][key.strip()] = value.strip()
    return sections


@pytest.fixture
def wg_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    return test_settings.model_copy(
        update={"wireguard_dir": tmp_path / "wg", "wireguard_endpoint": "fleet.example.com"}
    )


async def _vehicle(owner_conn: asyncpg.Connection, vpn_ip: str | None = None) -> int:
    return int(
        await owner_conn.fetchval(
            "INSERT INTO vehicles (name, vpn_ip) VALUES ($1, $2::inet) RETURNING id",
            f"wg-{uuid.uuid4().hex[:6]}",
            vpn_ip,
        )
    )


def test_keys_match_what_wg_derives() -> None:
    pair = generate_keypair()
    assert public_key_of(pair.private_key) == pair.public_key
    assert len(generate_preshared_key()) == 44
    wg = shutil.which("wg")
    if wg is None:
        pytest.skip("wireguard-tools (wg) is not installed (tools/system-deps.sh installs it)")
    derived = subprocess.run(
        [wg, "pubkey"], input=pair.private_key, capture_output=True, text=True, check=True
    )
    assert derived.stdout.strip() == pair.public_key


async def test_init_and_onboarding_follow_seed_001(
    db: Database, wg_settings: Settings, owner_conn: asyncpg.Connection, clean_tables: None
) -> None:
    state, created = init_server(wg_settings)
    assert created and state.server.address == "10.0.0.1/24" and state.server.port == 51820
    again, created_again = init_server(wg_settings)
    assert not created_again and again.server.private_key == state.server.private_key  # keys are kept
    paths = Paths.of(wg_settings)
    assert paths.state.stat().st_mode & 0o777 == 0o600 and paths.server_conf.stat().st_mode & 0o777 == 0o600

    first, second = await _vehicle(owner_conn), await _vehicle(owner_conn)
    manual = await _vehicle(owner_conn, "10.0.0.13")  # set by hand earlier: its address is not reused
    third = await _vehicle(owner_conn)
    onboarded = {}
    for vehicle_id in (first, second, third):
        async with db.system() as conn:
            onboarded[vehicle_id] = await add_vehicle(conn, wg_settings, vehicle_id)
    assert [onboarded[v].peer.address for v in (first, second, third)] == [
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.14",
    ]
    rows = await owner_conn.fetch("SELECT id, host(vpn_ip) AS ip FROM vehicles ORDER BY id")
    assert {r["id"]: r["ip"] for r in rows} == {
        first: "10.0.0.11",
        second: "10.0.0.12",
        manual: "10.0.0.13",
        third: "10.0.0.14",
    }
    audit = await owner_conn.fetch("SELECT target FROM admin_audit_log WHERE action = 'vehicle.vpn_assign'")
    assert len(audit) == 3

    # Onboarding again returns the same peer and changes nothing.
    async with db.system() as conn:
        repeat = await add_vehicle(conn, wg_settings, first)
    assert not repeat.created and repeat.vehicle_config == onboarded[first].vehicle_config

    # The server config, parsed back: one interface, one peer per vehicle, keys consistent on both sides.
    server = parse_wg(paths.server_conf.read_text())
    assert [name for name, _ in server] == ["Interface", "Peer", "Peer", "Peer"]
    interface = server[0][1]
    assert interface["Address"] == "10.0.0.1/24" and interface["ListenPort"] == "51820"
    server_public = public_key_of(interface["PrivateKey"])
    peers = {p["AllowedIPs"]: p for _, p in server[1:]}
    assert set(peers) == {"10.0.0.11/32", "10.0.0.12/32", "10.0.0.14/32"}
    for vehicle_id, result in onboarded.items():
        vehicle = parse_wg(Paths.of(wg_settings).vehicle_conf(vehicle_id).read_text())
        assert [name for name, _ in vehicle] == ["Interface", "Peer"]
        own, remote = vehicle[0][1], vehicle[1][1]
        assert own["Address"] == f"{result.peer.address}/24"
        assert remote["PublicKey"] == server_public
        assert remote["Endpoint"] == "fleet.example.com:51820" and remote["AllowedIPs"] == "10.0.0.1/32"
        assert remote["PersistentKeepalive"] == "25"
        server_side = peers[f"{result.peer.address}/32"]
        assert server_side["PublicKey"] == public_key_of(own["PrivateKey"])
        assert server_side["PresharedKey"] == remote["PresharedKey"]

    wg_quick = shutil.which("wg-quick")
    if wg_quick is not None:  # wg-quick's own parser accepts the file
        stripped = await asyncio.to_thread(
            subprocess.run, [wg_quick, "strip", str(paths.server_conf)], capture_output=True, text=True
        )
        assert stripped.returncode == 0, stripped.stderr
        assert stripped.stdout.count("[Peer]") == 3 and "Address" not in stripped.stdout


async def test_onboarding_errors_are_clear(
    db: Database, wg_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    vehicle_id = await _vehicle(owner_conn)
    async with db.system() as conn:
        with pytest.raises(ConfigError, match="fleet wireguard init"):
            await add_vehicle(conn, wg_settings, vehicle_id)
    init_server(wg_settings)
    async with db.system() as conn:
        with pytest.raises(NotFound):
            await add_vehicle(conn, wg_settings, 10**9)
        no_endpoint = wg_settings.model_copy(update={"wireguard_endpoint": None})
        with pytest.raises(ConfigError, match="WIREGUARD_ENDPOINT"):
            await add_vehicle(conn, no_endpoint, vehicle_id)
    tiny = wg_settings.model_copy(
        update={"wireguard_network": "10.9.0.0/29", "wireguard_dir": wg_settings.wireguard_path / "tiny"}
    )
    init_server(tiny)
    state = WireGuardState.load(Paths.of(tiny).state)
    assert state is not None and state.server.address == "10.9.0.1/29"


def test_cli_add_vehicle_prints_the_peer_config(
    test_settings: Settings, db: Database, tmp_path: Path
) -> None:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_", "WIREGUARD_", "CONFIG_FILE"))
    }
    env.update(
        DATABASE_URL=db.owner_dsn,
        DB_APP_PASSWORD=test_settings.db_app_password.get_secret_value(),
        DB_MIGRATE_ON_START="0",
        DATA_DIR=str(tmp_path),
        WIREGUARD_ENDPOINT="203.0.113.7",
        WIREGUARD_PORT="51999",
        ENV="development",
        LOG_LEVEL="WARNING",
        COLUMNS="250",
    )

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleet", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    add = fleet("vehicle", "add", "--name", "CLI truck")
    assert add.returncode == 0, add.stderr
    vehicle_id = add.stdout.strip()
    assert fleet("wireguard", "add-vehicle", vehicle_id).returncode != 0  # before init
    init = fleet("wireguard", "init")
    assert init.returncode == 0 and "10.0.0.1/24" in init.stdout, init.stderr
    onboard = fleet("wireguard", "add-vehicle", vehicle_id)
    assert onboard.returncode == 0, onboard.stderr
    sections = parse_wg(onboard.stdout)
    assert sections[1][1]["Endpoint"] == "203.0.113.7:51999"
    assert sections[0][1]["Address"].endswith("/24")
