"""Who a Grafana request belongs to: session checks for the auth proxy and the user's opaque Grafana login."""

from __future__ import annotations

import asyncpg


async def grafana_login(conn: asyncpg.Connection, user_id: int, *, rotate: bool = False) -> str:
    """The user's Grafana login (created on first use; a new random one with `rotate`)."""
    login: str = await conn.fetchval("SELECT fleet_grafana_login($1, $2)", user_id, rotate)
    return login


async def refresh_session(conn: asyncpg.Connection, token_id: str) -> asyncpg.Record | None:
    """A refresh token's session and user, read without locking or consuming the token."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT r.family_id, r.token_hash, r.expires_at, r.used_at, r.revoked_at,
                  u.id, u.email, u.name, u.role, u.status, u.token_version
           FROM refresh_tokens r JOIN users u ON u.id = r.user_id
           WHERE r.id = $1""",
        token_id,
    )
    return row


async def user_session(conn: asyncpg.Connection, user_id: int, session_id: str) -> asyncpg.Record | None:
    """The user and whether the session (refresh-token family) has been revoked or has expired."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT u.id, u.email, u.name, u.role, u.status, u.token_version,
                  NOT EXISTS (SELECT 1 FROM refresh_tokens r
                              WHERE r.family_id = $2 AND r.user_id = u.id AND r.revoked_at IS NULL
                                AND r.expires_at > now()) AS session_over
           FROM users u WHERE u.id = $1""",
        user_id,
        session_id,
    )
    return row
