"""Peer addresses of device connections: parsing, allow-lists, per-address counts and byte budgets.

Everything here is keyed by an *address key*: the IPv4 address, or the /64 network of an IPv6 address
(one subscriber usually holds a whole /64, so counting single IPv6 addresses would let one peer multiply
its allowance by rotating them). An IPv4-mapped IPv6 peer (a dual-stack listener) counts as its IPv4
address. All of it runs once per connection (or once per rejected frame), never per record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_ADDRESS = "?"
IPV6_KEY_PREFIX = 64
# An hourly budget keeps one entry per address that spent from it; past this many the oldest windows go.
MAX_BUDGET_ENTRIES = 100_000
BUDGET_WINDOW_SEC = 3600.0


def peer_host(peer: str) -> str:
    """The host part of a ``host:port`` peer string (``[v6]:port`` and bare ``v6:port`` both work)."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer[1:]
    host, sep, _port = peer.rpartition(":")
    return host if sep else peer


@lru_cache(maxsize=4096)
def parse_ip(host: str) -> IPAddress | None:
    """The peer's IP address (IPv4-mapped IPv6 as IPv4); None when the host is not an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_key(ip: IPAddress | None) -> str:
    """The key per-address rules count by (IPv4 address, IPv6 /64)."""
    if ip is None:
        return UNKNOWN_ADDRESS
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_KEY_PREFIX), strict=False))
    return str(ip)


def parse_networks(values: Iterable[object]) -> tuple[IPNetwork, ...]:
    """CIDR strings (or network objects, as asyncpg returns ``cidr``) as network objects."""
    networks: list[IPNetwork] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(value)
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            networks.append(ipaddress.ip_network(value))
        else:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
    return tuple(networks)


def allowed(ip: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    """True when ``ip`` lies in one of ``networks`` (an empty list allows every address)."""
    if not networks:
        return True
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


class AddressCounts:
    """Open connections per address key: in total, and those not identified yet."""

    __slots__ = ("total", "unidentified")

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.unidentified: dict[str, int] = {}

    def add(self, key: str) -> None:
        self.total[key] = self.total.get(key, 0) + 1
        self.unidentified[key] = self.unidentified.get(key, 0) + 1

    def identified(self, key: str) -> None:
        _decrement(self.unidentified, key)

    def remove(self, key: str, *, unidentified: bool) -> None:
        _decrement(self.total, key)
        if unidentified:
            _decrement(self.unidentified, key)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


@dataclass(slots=True)
class _Window:
    started: float
    used: int


class HourlyBudget:
    """Bytes each address key may spend per hour (a fixed window that starts at its first spending)."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def spend(self, key: str, nbytes: int, limit: int, now: float) -> bool:
        """Spend ``nbytes`` of the key's budget; False (nothing spent) when they do not fit."""
        window = self._windows.get(key)
        if window is None or now - window.started >= BUDGET_WINDOW_SEC:
            if window is None and len(self._windows) >= MAX_BUDGET_ENTRIES:
                self.expire(now)
                if len(self._windows) >= MAX_BUDGET_ENTRIES:
                    return False  # a flood of distinct addresses: keep nothing more this hour
            window = self._windows[key] = _Window(now, 0)
        if window.used + nbytes > limit:
            return False
        window.used += nbytes
        return True

    def used(self, key: str, now: float) -> int:
        window = self._windows.get(key)
        return 0 if window is None or now - window.started >= BUDGET_WINDOW_SEC else window.used

    def expire(self, now: float) -> None:
        """Forget windows that ended (called periodically; keeps the table bounded by active addresses)."""
        stale = [key for key, window in self._windows.items() if now - window.started >= BUDGET_WINDOW_SEC]
        for key in stale:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


class Marks:
    """Address keys marked until a time (e.g. addresses whose connections kept failing this hour)."""

    def __init__(self, limit: int = MAX_BUDGET_ENTRIES) -> None:
        self._until: dict[str, float] = {}
        self._limit = limit

    def mark(self, key: str, until: float) -> None:
        if key not in self._until and len(self._until) >= self._limit:
            return
        self._until[key] = max(until, self._until.get(key, until))

    def marked(self, key: str, now: float) -> bool:
        until = self._until.get(key)
        return until is not None and until > now

    def expire(self, now: float) -> None:
        for key in [key for key, until in self._until.items() if until <= now]:
            del self._until[key]
