"""What the API keeps for its lifetime (created by the lifespan, reached through `request.app.state.api`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.config import Settings
from fleet.db import Database
from fleet.mail.sender import MailSender
from fleet.ops.ratelimit import LocalBlocks, RateLimiter
from fleet.runtime import Runtime

if TYPE_CHECKING:
    from fleet.live.hub import LiveHub

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: list[str]) -> tuple[IPNetwork, ...]:
    """TRUSTED_PROXIES entries (addresses or CIDR blocks) as networks; invalid entries are refused."""
    from fleet.errors import ConfigError

    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as err:
            raise ConfigError(f"TRUSTED_PROXIES: not an address or network: {entry!r}") from err
    return tuple(networks)


@dataclass
class ApiState:
    runtime: Runtime
    limiter: RateLimiter
    trusted_proxies: tuple[IPNetwork, ...]
    mail_sender: MailSender | None = None
    auth_blocked: LocalBlocks = field(default_factory=LocalBlocks)  # addresses over the auth-failure limit
    oauth: Any = None  # the Authlib OAuth registry, built on first use of Google sign-in
    live: LiveHub | None = None  # the WebSocket streams' hub (fleet.live)
    read_db: Database | None = None  # the read replica's pool (DATABASE_READ_URL) for history reads
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def db(self) -> Database:
        return self.runtime.db

    def wake_mail(self) -> None:
        if self.mail_sender is not None:
            self.mail_sender.wake()
