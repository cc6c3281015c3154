"""Paginated JSON built by PostgreSQL: the server never materialises rows as Python objects for lists.

A page is `{"items": [...], "total": N, "limit": L, "offset": O, "has_more": bool}`. The items are
aggregated with `json_agg` in the database (the fast path for large history answers); the total is
counted only when the page does not already tell it (a short page ends the list).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg


def iso(column: str) -> str:
    """SQL expression rendering a timestamptz column as RFC 3339 text in UTC: `2026-11-25T12:00:00.25Z`.

    The value is shifted to UTC first, so the session's TimeZone does not matter, and formatted by the
    JSON encoder of `timestamp` (always ISO 8601, whatever DateStyle says; fractional seconds only when
    present). This is about a third cheaper than `to_char`, which matters for 86,400-row answers.
    """
    return f"(btrim(to_json(({column}) AT TIME ZONE 'UTC')::text, '\"') || 'Z')"


async def json_items(conn: asyncpg.Connection, query: str, *args: Any) -> tuple[str, int]:
    """Run `query` and return its rows as a JSON array (text) and the row count."""
    row = await conn.fetchrow(
        f"SELECT coalesce(json_agg(t), '[]'::json)::text AS items, count(*) AS n FROM ({query}) t", *args
    )
    assert row is not None
    return row["items"], int(row["n"])


async def _json_array_bytes(conn: asyncpg.Connection, query: str, *args: Any) -> tuple[bytes, int]:
    # UTF-8 bytes straight from the server (bytea): a large history answer is not decoded into a Python
    # string and encoded back.
    row = await conn.fetchrow(
        f"""SELECT convert_to(coalesce(json_agg(t), '[]'::json)::text, 'UTF8') AS items, count(*) AS n
            FROM ({query}) t""",
        *args,
    )
    assert row is not None
    return row["items"], int(row["n"])


async def json_page(
    conn: asyncpg.Connection,
    query: str,
    count_query: str,
    *args: Any,
    limit: int,
    offset: int,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One page of `query` (which must not end in LIMIT/OFFSET) as a JSON document.

    `count_query` counts every row `query` would return, with the same parameters.
    """
    n_args = len(args)
    items, returned = await _json_array_bytes(
        conn, f"{query} LIMIT ${n_args + 1} OFFSET ${n_args + 2}", *args, limit, offset
    )
    if returned < limit and (returned > 0 or offset == 0):
        total = offset + returned
    else:
        total = int(await conn.fetchval(count_query, *args))
    envelope = {"total": total, "limit": limit, "offset": offset, "has_more": offset + returned < total}
    if extra:
        envelope.update(extra)
    head = json.dumps(envelope, separators=(",", ":"), default=str).encode("utf-8")
    # Splice the database-built array in without parsing it again.
    return b"".join((b'{"items":', items, b",", head[1:]))
