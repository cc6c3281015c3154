"""How a pull range is cut into `/data` and `/alarms` requests (seed 003).

* A range longer than 24 hours (a vehicle that was away) is asked for in 1-hour windows, so no single answer
  is huge and progress is committed hour by hour.
* When an answer comes back truncated, the rest of its window is asked for in 10-minute windows; a 10-minute
  window that is still truncated is followed page by page through the agent's `next_from`.

Windows are half-open, `[start, end)`, and consecutive windows meet exactly, so nothing falls between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

LONG_GAP = timedelta(hours=24)
GAP_STEP = timedelta(hours=1)
TRUNCATED_STEP = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window `[start, end)`."""

    start: datetime
    end: datetime

    @property
    def width(self) -> timedelta:
        return self.end - self.start


def split(start: datetime, end: datetime, step: timedelta) -> list[Window]:
    """Cut [start, end) into consecutive windows of `step` (the last one shorter)."""
    windows: list[Window] = []
    cursor = start
    while cursor < end:
        stop = min(cursor + step, end)
        windows.append(Window(cursor, stop))
        cursor = stop
    return windows


def plan(start: datetime, end: datetime) -> list[Window]:
    """The first requests for [start, end): one window, or 1-hour windows when the gap exceeds 24 hours."""
    if end <= start:
        return []
    if end - start > LONG_GAP:
        return split(start, end, GAP_STEP)
    return [Window(start, end)]
