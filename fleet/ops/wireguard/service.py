"""The two WireGuard use cases: set up the server, onboard a vehicle (keys, address, `vpn_ip`, configs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from fleet.config import Settings
from fleet.db.queries import audit
from fleet.errors import ConfigError, NotFound
from fleet.ops.wireguard.config import (
    Peer,
    Server,
    WireGuardState,
    endpoint_of,
    network,
    next_free_address,
    render_server,
    render_vehicle,
    server_address,
    write_private,
)
from fleet.ops.wireguard.keys import generate_keypair, generate_preshared_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Paths:
    state: Path
    server_conf: Path
    peers: Path

    @classmethod
    def of(cls, settings: Settings) -> Paths:
        root = settings.wireguard_path
        return cls(root / "state.json", root / f"{settings.wireguard_interface}.conf", root / "peers")

    def vehicle_conf(self, vehicle_id: int) -> Path:
        return self.peers / f"vehicle-{vehicle_id}.conf"


def init_server(settings: Settings) -> tuple[WireGuardState, bool]:
    """Create the server's keys and config (once: keys already made are kept); return (state, created)."""
    paths = Paths.of(settings)
    state = WireGuardState.load(paths.state)
    created = state is None
    if state is None:
        keys = generate_keypair()
        state = WireGuardState(
            Server(keys.private_key, keys.public_key, server_address(settings), settings.wireguard_port)
        )
        state.save(paths.state)
        log.info("wireguard_server_created", public_key=keys.public_key, address=state.server.address)
    write_private(paths.server_conf, render_server(state, settings.wireguard_interface))
    return state, created


@dataclass
class Onboarded:
    peer: Peer
    vehicle_config: str
    created: bool
    config_path: Path


async def add_vehicle(conn: asyncpg.Connection, settings: Settings, vehicle_id: int) -> Onboarded:
    """Give a vehicle a peer: the next free address, keys, `vehicles.vpn_ip`, its config and the server's.

    Idempotent: a vehicle that already has a peer gets its existing config back. `conn` runs in a superuser
    (system) context; the change of `vpn_ip` is audited.
    """
    paths = Paths.of(settings)
    state = WireGuardState.load(paths.state)
    if state is None:
        raise ConfigError("run `fleet wireguard init` first: the server has no WireGuard keys yet")
    endpoint = endpoint_of(settings)
    vehicle = await conn.fetchrow(
        "SELECT id, name, host(vpn_ip) AS vpn_ip FROM vehicles WHERE id = $1", vehicle_id
    )
    if vehicle is None:
        raise NotFound(f"no vehicle with id {vehicle_id}")
    prefix = network(settings).prefixlen
    peer = state.peers.get(vehicle_id)
    created = peer is None
    if peer is None:
        rows = await conn.fetch(
            "SELECT host(vpn_ip) AS ip FROM vehicles WHERE vpn_ip IS NOT NULL AND id <> $1", vehicle_id
        )
        taken = {r["ip"] for r in rows} | {p.address for p in state.peers.values()}
        taken.add(state.server.address.split("/")[0])
        keys = generate_keypair()
        peer = Peer(
            vehicle_id=vehicle_id,
            name=vehicle["name"],
            address=next_free_address(settings, taken),
            public_key=keys.public_key,
            private_key=keys.private_key,
            preshared_key=generate_preshared_key(),
        )
        state.peers[vehicle_id] = peer
        state.save(paths.state)
        write_private(paths.server_conf, render_server(state, settings.wireguard_interface))
    if vehicle["vpn_ip"] != peer.address:
        await conn.execute("UPDATE vehicles SET vpn_ip = $1::inet WHERE id = $2", peer.address, vehicle_id)
        await audit.record(
            conn,
            action="vehicle.vpn_assign",
            target=f"vehicle:{vehicle_id}",
            details={
                "vpn_ip": peer.address,
                "previous": vehicle["vpn_ip"],
                "public_key": peer.public_key,
                "via": "cli",
            },
        )
    text = render_vehicle(state, peer, endpoint, prefix)
    write_private(paths.vehicle_conf(vehicle_id), text)
    log.info("wireguard_vehicle_onboarded", vehicle_id=vehicle_id, address=peer.address, created=created)
    return Onboarded(peer, text, created, paths.vehicle_conf(vehicle_id))
