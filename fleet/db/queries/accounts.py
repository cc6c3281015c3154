"""Account administration: pending registrations, approval, blocking, vehicle assignment lookups.

Status changes run in a superuser context only (the `users_guard` trigger refuses them elsewhere).
"""

from __future__ import annotations

import asyncpg

from fleet.db.queries.users import USER_COLUMNS


async def list_users(
    conn: asyncpg.Connection, *, status: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """Users (optionally of one status), oldest registration first."""
    rows = await conn.fetch(
        f"""SELECT {USER_COLUMNS} FROM users WHERE ($1::text IS NULL OR status = $1)
            ORDER BY created_at, id LIMIT $2 OFFSET $3""",
        status,
        limit,
        offset,
    )
    total = await conn.fetchval("SELECT count(*) FROM users WHERE ($1::text IS NULL OR status = $1)", status)
    return list(rows), int(total)


async def set_status(
    conn: asyncpg.Connection, user_id: int, status: str, *, actor_id: int | None, bump_version: bool
) -> asyncpg.Record | None:
    """Change a user's status; bumping the token version invalidates every access token they hold."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE users SET status = $2,
                   token_version = token_version + CASE WHEN $4 THEN 1 ELSE 0 END,
                   approved_at = CASE WHEN $2 = 'active' THEN now() ELSE approved_at END,
                   approved_by = CASE WHEN $2 = 'active' THEN $3 ELSE approved_by END
            WHERE id = $1 RETURNING {USER_COLUMNS}""",
        user_id,
        status,
        actor_id,
        bump_version,
    )
    return row


async def set_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def user_with_hash(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """A user with their password hash (None when the account has no password: Google sign-in only)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE id = $1", user_id
    )
    return row


async def active_superuser_emails(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT email FROM users WHERE role = 'superuser' AND status = 'active' ORDER BY id"
    )
    return [row["email"] for row in rows]
