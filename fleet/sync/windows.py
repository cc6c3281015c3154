"""How a pull range is cut into `/data` and `/alarms` requests (seed 003).

* A range longer than 24 hours (a vehicle that was away) is asked for in 1-hour windows, so no single answer
  is huge and progress is committed hour by hour.
* When an answer comes back truncated, the rest of its window is asked for in 10-minute windows; a 10-minute
  window that is still truncated is followed page by page through the agent's `next_from`.
* `/alarms` has no paging: windows of up to a day, and a truncated answer is asked for again in halves.
* No window is wider than the agent's `max_window_seconds` (from `/status.limits`).

Windows are half-open, `[start, end)`, and consecutive windows meet exactly, so nothing falls between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

LONG_GAP = timedelta(hours=24)
GAP_STEP = timedelta(hours=1)
TRUNCATED_STEP = timedelta(minutes=10)
ALARM_STEP = timedelta(hours=24)
# A truncated /alarms answer is asked for again in halves (contract §5) down to this width.
MIN_ALARM_WINDOW = timedelta(seconds=1)


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


def plan(start: datetime, end: datetime, max_width: timedelta | None = None) -> list[Window]:
    """The first `/data` requests for [start, end): one window, or 1-hour windows after a gap over 24 hours.

    `max_width` is the agent's widest window (`/status.limits.max_window_seconds`); no window exceeds it.
    """
    if end <= start:
        return []
    long_gap = LONG_GAP if max_width is None else min(LONG_GAP, max_width)
    if end - start > long_gap:
        return split(start, end, GAP_STEP if max_width is None else min(GAP_STEP, max_width))
    return [Window(start, end)]


def plan_alarms(start: datetime, end: datetime, max_width: timedelta | None = None) -> list[Window]:
    """The first `/alarms` requests for [start, end): windows of up to a day (alarms are a few per hour)."""
    step = ALARM_STEP if max_width is None else min(ALARM_STEP, max_width)
    return split(start, end, step)
