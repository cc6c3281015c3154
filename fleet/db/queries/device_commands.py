"""SQL of device commands: queue, list, claim for sending, settle, expire (table ``device_commands``).

Status flow: ``queued`` → ``sent`` → ``answered`` | ``failed`` | ``expired``; a queued command can also
expire. Claiming (``queued`` → ``sent``) is one conditional UPDATE, so a command is written to a socket at
most once even when two ingest processes see the device (a reconnect moving between processes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

COMMAND_COLUMNS = """id, device_id, vehicle_id, protocol, type, payload, status, answer, error, requested_by,
    created_at, expires_at, sent_at, finished_at"""


async def insert_command(
    conn: asyncpg.Connection,
    *,
    device_id: int,
    vehicle_id: int | None,
    protocol: str,
    type: str,
    payload: dict[str, Any],
    requested_by: int | None,
    expires_at: datetime,
) -> asyncpg.Record:
    """Queue one command (RLS decides whether the caller may)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO device_commands (device_id, vehicle_id, protocol, type, payload, requested_by, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COMMAND_COLUMNS}""",
        device_id,
        vehicle_id,
        protocol,
        type,
        payload,  # the pool's jsonb codec encodes it
        requested_by,
        expires_at,
    )
    assert row is not None
    return row


async def list_commands(
    conn: asyncpg.Connection, device_id: int, *, status: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """A device's commands, newest first."""
    where = "device_id = $1 AND ($2::text IS NULL OR status = $2)"
    rows = await conn.fetch(
        f"""SELECT {COMMAND_COLUMNS} FROM device_commands WHERE {where}
            ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4""",
        device_id,
        status,
        limit,
        offset,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM device_commands WHERE {where}", device_id, status)
    return list(rows), int(total)


async def devices_with_queued(conn: asyncpg.Connection) -> list[int]:
    """Devices that have commands waiting to be sent (and not expired)."""
    rows = await conn.fetch(
        "SELECT DISTINCT device_id FROM device_commands WHERE status = 'queued' AND expires_at > now()"
    )
    return [row["device_id"] for row in rows]


async def next_queued(conn: asyncpg.Connection, device_id: int) -> asyncpg.Record | None:
    """The oldest command waiting for a device."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {COMMAND_COLUMNS} FROM device_commands
            WHERE device_id = $1 AND status = 'queued' AND expires_at > now() ORDER BY id LIMIT 1""",
        device_id,
    )
    return row


async def claim(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record | None:
    """Mark a queued command sent; None when it is no longer queued (taken, expired, settled)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE device_commands SET status = 'sent', sent_at = now()
            WHERE id = $1 AND status = 'queued' AND expires_at > now() RETURNING {COMMAND_COLUMNS}""",
        command_id,
    )
    return row


async def requeue(conn: asyncpg.Connection, command_id: int) -> None:
    """Put back a claimed command that never reached the socket."""
    await conn.execute(
        "UPDATE device_commands SET status = 'queued', sent_at = NULL WHERE id = $1 AND status = 'sent'",
        command_id,
    )


async def settle(
    conn: asyncpg.Connection,
    command_id: int,
    status: str,
    *,
    answer: str | None = None,
    error: str | None = None,
) -> asyncpg.Record | None:
    """Finish a command that is still open (queued or sent); None when it was settled already."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE device_commands SET status = $2, answer = $3, error = $4, finished_at = now()
            WHERE id = $1 AND status IN ('queued', 'sent') RETURNING {COMMAND_COLUMNS}""",
        command_id,
        status,
        answer,
        error,
    )
    return row


async def expire_overdue(conn: asyncpg.Connection, orphan_after_sec: float) -> list[asyncpg.Record]:
    """Expire queued commands past their expiry, and sent ones nobody waits for any more.

    The process that sent a command expires it after the protocol's answer timeout; a command still
    ``sent`` ``orphan_after_sec`` after sending lost its process (a crash) and is expired here.
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""UPDATE device_commands SET status = 'expired', finished_at = now(),
                   error = CASE WHEN status = 'queued' THEN 'not delivered before it expired'
                                ELSE 'no answer (the connection that sent it is gone)' END
            WHERE (status = 'queued' AND expires_at <= now())
               OR (status = 'sent' AND sent_at < now() - make_interval(secs => $1))
            RETURNING {COMMAND_COLUMNS}""",
        orphan_after_sec,
    )
    return rows
