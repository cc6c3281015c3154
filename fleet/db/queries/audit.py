"""The admin audit log: append from any authenticated context, read as a superuser (RLS enforces both)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def record(
    conn: asyncpg.Connection,
    *,
    action: str,
    actor_id: int | None = None,
    actor_email: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    client_addr: str | None = None,
) -> None:
    """Append one entry."""
    await conn.execute(
        """INSERT INTO admin_audit_log (actor_id, actor_email, action, target, details, client_addr)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::inet)""",
        actor_id,
        actor_email,
        action,
        target,
        details or {},
        client_addr,
    )


async def list_entries(
    conn: asyncpg.Connection,
    *,
    limit: int,
    offset: int,
    action: str | None = None,
    actor: str | None = None,
) -> tuple[list[asyncpg.Record], int]:
    """Newest first. `action` matches exactly or as a prefix ending in '.' (`auth.`); `actor` is an id or e-mail."""
    actor_id = (
        int(actor) if actor is not None and actor.isascii() and actor.isdigit() and len(actor) < 19 else None
    )
    where = """($1::text IS NULL OR action = $1 OR (right($1, 1) = '.' AND starts_with(action, $1)))
               AND ($2::text IS NULL OR actor_id = $3 OR lower(actor_email) = lower($2))"""
    rows = await conn.fetch(
        f"""SELECT id, time, actor_id, actor_email, action, target, details, host(client_addr) AS client_addr
            FROM admin_audit_log WHERE {where}
            ORDER BY time DESC, id DESC LIMIT $4 OFFSET $5""",
        action,
        actor,
        actor_id,
        limit,
        offset,
    )
    total = await conn.fetchval(
        f"SELECT count(*) FROM admin_audit_log WHERE {where}", action, actor, actor_id
    )
    return list(rows), int(total)
