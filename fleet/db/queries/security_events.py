"""Security events of the device port: appended by the ingest role, read by superusers (RLS enforces both)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class SecurityEventRow:
    """One row of ``security_events`` (``count`` attempts of one kind, device and address)."""

    kind: str
    first_at: datetime
    last_at: datetime
    count: int
    device_id: int | None
    imei: str | None
    protocol: str | None
    peer: str | None
    details: dict[str, Any]


async def insert_events(conn: asyncpg.Connection, events: Sequence[SecurityEventRow]) -> None:
    """Append events in one statement (a device deleted meanwhile leaves its events without a device)."""
    if not events:
        return
    await conn.execute(
        """INSERT INTO security_events (kind, first_at, last_at, count, device_id, imei, protocol, peer, details)
           SELECT e.kind, e.first_at, e.last_at, e.count, d.id, e.imei, e.protocol, e.peer, e.details::jsonb
           FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::bigint[], $6::text[],
                       $7::text[], $8::text[], $9::text[])
                AS e(kind, first_at, last_at, count, device_id, imei, protocol, peer, details)
           LEFT JOIN devices d ON d.id = e.device_id""",
        [e.kind for e in events],
        [e.first_at for e in events],
        [e.last_at for e in events],
        [e.count for e in events],
        [e.device_id for e in events],
        [e.imei for e in events],
        [e.protocol for e in events],
        [e.peer for e in events],
        [json.dumps(e.details) for e in events],
    )


async def list_events(
    conn: asyncpg.Connection,
    *,
    limit: int,
    offset: int,
    kind: str | None = None,
    device_id: int | None = None,
    imei: str | None = None,
) -> tuple[list[asyncpg.Record], int]:
    """Newest first, optionally of one kind, device or IMEI."""
    where = """($1::text IS NULL OR kind = $1) AND ($2::bigint IS NULL OR device_id = $2)
               AND ($3::text IS NULL OR imei = $3)"""
    rows = await conn.fetch(
        f"""SELECT id, kind, first_at, last_at, count, device_id, imei, protocol, peer, details
            FROM security_events WHERE {where}
            ORDER BY last_at DESC, id DESC LIMIT $4 OFFSET $5""",
        kind,
        device_id,
        imei,
        limit,
        offset,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM security_events WHERE {where}", kind, device_id, imei)
    return list(rows), int(total)
