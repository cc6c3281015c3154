"""The one vehicle status rule: `online`, `offline` or `unknown`, the same in the API, the WebSocket and the UI.

A vehicle has two kinds of signs of life: its Outbound API answering a pull (the sync service every
`SYNC_INTERVAL_SEC`, or the live poller every 2 s while someone watches it: `vehicles.last_seen_at`, with the
outcome of the latest attempt in `vehicles.sync_status`) and its trackers sending (`devices.last_seen_at`).

* `online`  — a tracker sent within the online window, or the vehicle answered a pull within the window and
  its latest pull attempt did not fail;
* `unknown` — never any sign of life, and no failed pull either;
* `offline` — everything else: the latest pull failed (at once, without waiting for the window to pass) and no
  tracker is sending, or the last sign of life is older than the window.

The window is `ONLINE_WINDOW_CYCLES` sync intervals (90 s by default): two missed cycles are tolerated, so a
slow cycle does not flap the status. A vehicle whose agent answers but cannot be synced (`sync_status =
'error'`) is online: it answers; why its data does not arrive is in the sync journal.

The rule exists twice, as SQL (`status_sql`, for lists of thousands of vehicles) and as Python
(`derive_status`, for the live streams' transitions), built from the same constants here; a test runs both over
every combination of inputs against PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Literal

VehicleStatus = Literal["online", "offline", "unknown"]

ONLINE: Final = "online"
OFFLINE: Final = "offline"
UNKNOWN: Final = "unknown"
# `vehicles.sync_status` after a pull that failed (timeout, unreachable, refused); the other values
# (`online`, `error`, `unknown`) do not make a vehicle offline by themselves.
PULL_FAILED: Final = "offline"

# Sync intervals without a sign of life before a vehicle counts as offline.
ONLINE_WINDOW_CYCLES = 3


def online_window_sec(sync_interval_sec: float) -> float:
    """How long a sign of life keeps a vehicle online."""
    return ONLINE_WINDOW_CYCLES * sync_interval_sec


def status_sql(*, pull_seen: str, sync_status: str, tracker_seen: str, window_sec: str) -> str:
    """The rule as a SQL CASE expression over the given column expressions (`window_sec`: seconds)."""
    fresh = f"now() - make_interval(secs => {window_sec})"
    return f"""CASE WHEN {tracker_seen} >= {fresh}
                      OR ({pull_seen} >= {fresh} AND {sync_status} IS DISTINCT FROM '{PULL_FAILED}')
                    THEN '{ONLINE}'
                    WHEN {tracker_seen} IS NULL AND {pull_seen} IS NULL
                         AND {sync_status} IS DISTINCT FROM '{PULL_FAILED}' THEN '{UNKNOWN}'
                    ELSE '{OFFLINE}' END"""


def derive_status(
    *,
    pull_seen_at: datetime | None,
    sync_status: str | None,
    tracker_seen_at: datetime | None,
    now: datetime,
    window: float | timedelta,
) -> VehicleStatus:
    """Return `online`, `offline` or `unknown` (see the module docstring)."""
    span = window if isinstance(window, timedelta) else timedelta(seconds=window)
    fresh = now - span
    failed = sync_status == PULL_FAILED
    # A time slightly ahead of `now` (clock skew between processes) still counts as fresh.
    if (tracker_seen_at is not None and tracker_seen_at >= fresh) or (
        pull_seen_at is not None and pull_seen_at >= fresh and not failed
    ):
        return ONLINE
    if tracker_seen_at is None and pull_seen_at is None and not failed:
        return UNKNOWN
    return OFFLINE


def status_reason(state: VehicleStatus, sync_status: str | None) -> str | None:
    """A short human reason for `offline` (None for the other states)."""
    if state != OFFLINE:
        return None
    if sync_status == PULL_FAILED:
        return "the vehicle did not answer its latest pull"
    return "no sign of life within the online window"
