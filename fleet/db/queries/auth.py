"""Credentials in the database: refresh-token families, per-user API keys, OAuth identities, sessions.

Functions that resolve a credential before the caller's identity is known (refresh, API-key lookup,
OAuth sign-in) run in a system context; everything else runs in the caller's own tenant context, where
RLS limits `refresh_tokens`, `api_keys` and `oauth_accounts` to the caller's rows.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fleet.db.queries.users import USER_COLUMNS


async def session_state(conn: asyncpg.Connection, user_id: int, session_id: str) -> asyncpg.Record | None:
    """The user's current role/status/token version, whether the session is theirs, and whether it was revoked.

    `session_known` is false for a `sid` that is no sign-in session of this user: a token minted with a made-up
    or another user's session id (a leaked SECRET_KEY, or a bug) is refused, not trusted for its signature alone.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT u.role, u.status, u.token_version, u.email,
                  EXISTS (SELECT 1 FROM refresh_tokens r
                          WHERE r.family_id = $2 AND r.user_id = u.id) AS session_known,
                  EXISTS (SELECT 1 FROM refresh_tokens r
                          WHERE r.family_id = $2 AND r.revoked_at IS NOT NULL) AS session_revoked
           FROM users u WHERE u.id = $1""",
        user_id,
        session_id,
    )
    return row


async def store_refresh_token(
    conn: asyncpg.Connection,
    *,
    token_id: str,
    user_id: int,
    family_id: str,
    token_hash: str,
    expires_at: datetime,
    client_addr: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, client_addr)
           VALUES ($1, $2, $3, $4, $5, $6::inet)""",
        token_id,
        user_id,
        family_id,
        token_hash,
        expires_at,
        client_addr,
    )


async def lock_refresh_token(conn: asyncpg.Connection, token_id: str) -> asyncpg.Record | None:
    """The refresh token row with its user, locked until the end of the transaction (rotation)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT r.id AS token_id, r.family_id, r.token_hash, r.expires_at, r.used_at, r.revoked_at,
                   {", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))}
            FROM refresh_tokens r JOIN users u ON u.id = r.user_id
            WHERE r.id = $1 FOR UPDATE OF r""",
        token_id,
    )
    return row


async def mark_refresh_used(conn: asyncpg.Connection, token_id: str) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", token_id)


async def revoke_family(conn: asyncpg.Connection, family_id: str) -> int:
    """Revoke every token of a session; its access tokens stop working on their next request."""
    status = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL", family_id
    )
    return int(status.rsplit(" ", 1)[-1])


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: int) -> int:
    """Revoke every session of the user."""
    return await revoke_other_sessions(conn, user_id, None)


async def revoke_other_sessions(conn: asyncpg.Connection, user_id: int, keep_family: str | None) -> int:
    """Revoke every session of the user but `keep_family` (after a password change, other devices sign in again)."""
    status = await conn.execute(
        """UPDATE refresh_tokens SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $2""",
        user_id,
        keep_family,
    )
    return int(status.rsplit(" ", 1)[-1])


async def family_of(conn: asyncpg.Connection, token_id: str) -> str | None:
    family: str | None = await conn.fetchval("SELECT family_id FROM refresh_tokens WHERE id = $1", token_id)
    return family


async def record_login(conn: asyncpg.Connection, user_id: int) -> None:
    await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user_id)


# --- API keys -----------------------------------------------------------------------------------------------
API_KEY_COLUMNS = "id, name, prefix, created_at, last_used_at, revoked_at"


async def create_api_key(
    conn: asyncpg.Connection, *, user_id: int, name: str, prefix: str, key_hash: str
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)
            RETURNING {API_KEY_COLUMNS}""",
        user_id,
        name,
        prefix,
        key_hash,
    )
    return row


async def list_api_keys(
    conn: asyncpg.Connection, user_id: int, *, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    rows = await conn.fetch(
        f"""SELECT {API_KEY_COLUMNS}, count(*) OVER () AS total FROM api_keys WHERE user_id = $1
            ORDER BY id DESC LIMIT $2 OFFSET $3""",
        user_id,
        limit,
        offset,
    )
    total = (
        rows[0]["total"]
        if rows
        else await conn.fetchval("SELECT count(*) FROM api_keys WHERE user_id = $1", user_id)
    )
    return list(rows), int(total)


async def revoke_api_key(conn: asyncpg.Connection, *, key_id: int, user_id: int) -> asyncpg.Record | None:
    """Revoke one of the user's keys; None when it does not exist (or is not the user's)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 AND user_id = $2 RETURNING {API_KEY_COLUMNS}""",
        key_id,
        user_id,
    )
    return row


async def revoke_user_api_keys(conn: asyncpg.Connection, user_id: int) -> int:
    """Revoke every API key of a user for good (blocking): unblocking later does not bring them back."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(status.rsplit(" ", 1)[-1])


async def lookup_api_key(conn: asyncpg.Connection, prefix: str) -> asyncpg.Record | None:
    """An unrevoked API key with its user (system context: the caller is not known yet)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT k.id, k.key_hash, k.user_id, u.role, u.status, u.email
           FROM api_keys k JOIN users u ON u.id = k.user_id
           WHERE k.prefix = $1 AND k.revoked_at IS NULL""",
        prefix,
    )
    return row


async def touch_api_key(conn: asyncpg.Connection, key_id: int) -> None:
    """Record use, at most once a minute per key (no write on every request)."""
    await conn.execute(
        """UPDATE api_keys SET last_used_at = now()
           WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')""",
        key_id,
    )


# --- OAuth identities -----------------------------------------------------------------------------------------
async def user_by_oauth(conn: asyncpg.Connection, provider: str, subject: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))}
            FROM oauth_accounts o JOIN users u ON u.id = o.user_id
            WHERE o.provider = $1 AND o.subject = $2""",
        provider,
        subject,
    )
    return row


async def link_oauth(
    conn: asyncpg.Connection, *, user_id: int, provider: str, subject: str, email: str | None
) -> None:
    await conn.execute(
        """INSERT INTO oauth_accounts (user_id, provider, subject, email) VALUES ($1, $2, $3, $4)
           ON CONFLICT (provider, subject) DO NOTHING""",
        user_id,
        provider,
        subject,
        email,
    )
