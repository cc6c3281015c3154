"""Who performs a management action: a signed-in user (API), an API key, or an operator at the CLI."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from fleet.db.queries import audit


@dataclass(frozen=True, slots=True)
class Actor:
    """The acting user (None for the static API_KEY and the CLI), how they act, and from where."""

    user_id: int | None
    email: str | None
    role: Literal["superuser", "owner"]
    client_addr: str | None = None
    via: Literal["api", "cli"] = "api"

    @classmethod
    def cli(cls) -> Actor:
        """An operator at the command line: superuser rights, named by the OS account in the audit log."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            who = "unknown"
        return cls(user_id=None, email=f"cli:{who}", role="superuser", via="cli")

    @property
    def is_superuser(self) -> bool:
        return self.role == "superuser"

    async def audit(self, conn: asyncpg.Connection, action: str, target: str, **details: Any) -> None:
        """Write the audit entry of an action (in the action's transaction)."""
        if self.via != "api":
            details["via"] = self.via
        await audit.record(
            conn,
            action=action,
            actor_id=self.user_id,
            actor_email=self.email,
            target=target,
            details=details,
            client_addr=self.client_addr,
        )
