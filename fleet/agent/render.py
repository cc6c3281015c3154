"""JSON bodies of the sample endpoints, built as text.

A /data page may hold 50,000 rows. Building 50,000 dicts for ``json.dumps`` costs several times more than
writing the rows straight into text, and the row shape is fixed, so it is written directly: channel ids are
ints, times come from :func:`format_time` (quote-free), values are finite floats whose ``repr`` is valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fleet.agent.times import format_time


def render_rows(rows: Sequence[tuple[int, int, float]]) -> str:
    """Render rows of (channel_id, epoch-ms, value) as a JSON array of row objects."""
    parts: list[str] = []
    append = parts.append
    last_ms = -1
    stamp = ""
    for channel_id, ms, value in rows:
        # Rows arrive ordered by time with one timestamp per tick for all channels: format each time once.
        if ms != last_ms:
            last_ms = ms
            stamp = format_time(ms)
        append(f'{{"channel_id":{channel_id:d},"time":"{stamp}","value":{value!r}}}')
    return "[" + ",".join(parts) + "]"


def render_data_page(
    from_ms: int,
    to_ms: int,
    rows: Sequence[tuple[int, int, float]],
    *,
    truncated: bool,
    next_from: int | None,
) -> bytes:
    """Render the /data response body."""
    head = _compact({"from": format_time(from_ms), "to": format_time(to_ms)})[:-1]
    tail = _compact(
        {
            "count": len(rows),
            "truncated": truncated,
            "next_from": format_time(next_from) if next_from is not None else None,
        }
    )[1:]
    return f'{head},"rows":{render_rows(rows)},{tail}'.encode()


def _compact(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"))
