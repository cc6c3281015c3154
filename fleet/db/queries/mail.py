"""The mail outbox (superuser/system context only): messages are queued in the same transaction as the
change they announce, and a sender task delivers them."""

from __future__ import annotations

import asyncpg

# Attempts before a message is left for an operator to look at.
MAX_ATTEMPTS = 8
# Retry n waits RETRY_BASE_SEC * 2**(n-1) after the message was queued.
RETRY_BASE_SEC = 30


async def enqueue(conn: asyncpg.Connection, *, recipients: list[str], subject: str, body: str) -> list[int]:
    rows = await conn.fetch(
        """INSERT INTO mail_outbox (recipient, subject, body)
           SELECT r, $2, $3 FROM unnest($1::text[]) AS r RETURNING id""",
        recipients,
        subject,
        body,
    )
    return [row["id"] for row in rows]


async def queued_recently(
    conn: asyncpg.Connection, *, recipient: str, subject: str, within_sec: float
) -> bool:
    """Whether the same message went to the same address recently (a cap on mail anyone can trigger)."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM mail_outbox WHERE lower(recipient) = lower($1) AND subject = $2
                          AND created_at > now() - make_interval(secs => $3))""",
        recipient,
        subject,
        float(within_sec),
    )
    return found


async def claim_next(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The oldest message due for (re)delivery, locked so that no other sender takes it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT id, recipient, subject, body, attempts FROM mail_outbox
           WHERE sent_at IS NULL AND attempts < $1
             AND (attempts = 0 OR created_at + make_interval(secs => $2 * 2 ^ (attempts - 1)) <= now())
           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""",
        MAX_ATTEMPTS,
        float(RETRY_BASE_SEC),
    )
    return row


async def mark_sent(conn: asyncpg.Connection, message_id: int) -> None:
    await conn.execute(
        "UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1",
        message_id,
    )


async def mark_failed(conn: asyncpg.Connection, message_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
        message_id,
        error[:500],
    )


async def pending_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL"))
