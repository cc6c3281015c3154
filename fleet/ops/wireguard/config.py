"""The server's `wg0.conf` and each vehicle's peer config, rendered from the state file.

The state (`WIREGUARD_DIR/state.json`, mode 0600) is the source of truth: keys and addresses. `wg0.conf` is
rewritten from it after every change, so it never drifts from what `fleet wireguard` knows.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet.config import Settings
from fleet.errors import ConfigError

KEEPALIVE_SEC = 25  # vehicles sit behind mobile-carrier NAT; the server must be able to reach them


@dataclass
class Peer:
    vehicle_id: int
    name: str
    address: str
    public_key: str
    private_key: str
    preshared_key: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass
class Server:
    private_key: str
    public_key: str
    address: str  # with the prefix length, e.g. 10.0.0.1/24
    port: int


@dataclass
class WireGuardState:
    server: Server
    peers: dict[int, Peer] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> WireGuardState | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                server=Server(**data["server"]),
                peers={int(k): Peer(**v) for k, v in data.get("peers", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable WireGuard state: {err}") from err

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "server": asdict(self.server),
            "peers": {str(k): asdict(v) for k, v in sorted(self.peers.items())},
        }
        write_private(path, json.dumps(data, indent=2))


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (it holds private keys)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def network(settings: Settings) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(settings.wireguard_network, strict=True)
    except ValueError as err:
        raise ConfigError(f"WIREGUARD_NETWORK: {err}") from err
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError("WIREGUARD_NETWORK must be an IPv4 network (seed 001: 10.0.0.0/24)")
    return net


def server_address(settings: Settings) -> str:
    """The server's address with the prefix: the network's first host (10.0.0.1/24)."""
    net = network(settings)
    return f"{net.network_address + 1}/{net.prefixlen}"


def next_free_address(settings: Settings, taken: set[str]) -> str:
    """The first vehicle address (from .WIREGUARD_FIRST_VEHICLE_HOST on) that nobody uses."""
    net = network(settings)
    first = net.network_address + settings.wireguard_first_vehicle_host
    for candidate in net.hosts():
        if candidate >= first and str(candidate) not in taken:
            return str(candidate)
    raise ConfigError(f"no free address left in {net} for another vehicle")


def render_server(state: WireGuardState, interface: str) -> str:
    lines = [
        f"# {interface}.conf of the Fleet Server, written by `fleet wireguard`; change it with that command",
        "# (hand edits are overwritten). Apply changes without dropping tunnels:",
        f"#   wg syncconf {interface} <(wg-quick strip {interface})",
        "[Interface]",
        f"Address = {state.server.address}",
        f"ListenPort = {state.server.port}",
        f"PrivateKey = {state.server.private_key}",
    ]
    for peer in sorted(state.peers.values(), key=lambda p: p.vehicle_id):
        lines += [
            "",
            f"# vehicle {peer.vehicle_id}: {peer.name}",
            "[Peer]",
            f"PublicKey = {peer.public_key}",
            f"PresharedKey = {peer.preshared_key}",
            f"AllowedIPs = {peer.address}/32",
        ]
    return "\n".join(lines) + "\n"


def render_vehicle(state: WireGuardState, peer: Peer, endpoint: str, prefix: int) -> str:
    """The vehicle router's side (RUTX11: Services → VPN → WireGuard, or `wg-quick`)."""
    server_ip = state.server.address.split("/")[0]
    return (
        "\n".join(
            [
                f"# Vehicle {peer.vehicle_id} ({peer.name}): WireGuard peer of the Fleet Server.",
                "# Only the server's address goes through the tunnel; the Outbound API (port 8001) must listen",
                f"# on {peer.address} and accept the server {server_ip} only.",
                "[Interface]",
                f"PrivateKey = {peer.private_key}",
                f"Address = {peer.address}/{prefix}",
                "",
                "[Peer]",
                f"PublicKey = {state.server.public_key}",
                f"PresharedKey = {peer.preshared_key}",
                f"Endpoint = {endpoint}",
                f"AllowedIPs = {server_ip}/32",
                f"PersistentKeepalive = {KEEPALIVE_SEC}",
            ]
        )
        + "\n"
    )


def endpoint_of(settings: Settings) -> str:
    if not settings.wireguard_endpoint:
        raise ConfigError(
            "set WIREGUARD_ENDPOINT to the server's public host name or address (e.g. fleet.example.com): "
            "vehicles dial it"
        )
    host = settings.wireguard_endpoint.strip()
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    if host.rsplit(":", 1)[-1].isdigit() and not host.endswith("]") and ":" in host:
        return host  # already host:port
    return f"{host}:{settings.wireguard_port}"
