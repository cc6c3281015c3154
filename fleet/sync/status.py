"""A vehicle's status as the sync service sees it: online, offline or unknown.

Not yet the single definition: the API computes the status in SQL (`fleet.db.queries.vehicle_views`) with a
3-interval window that also counts tracker activity; docs/SYNC.md records the discrepancy to reconcile.

The sync service records facts — `last_seen_at` (the last successful `/status`) and `sync_status` (the outcome
of the latest attempt: `online` after an answer, `offline` after a timeout or error, `error` when the vehicle
answers but cannot be synced: an unsupported contract version or a failing local database). From them:

* `unknown` — never contacted: no successful `/status` and no failed attempt either;
* `online`  — the vehicle answered the latest attempt and that is recent: within two sync intervals (one
  missed cycle is tolerated, so a slow cycle does not flap the status). A vehicle in `error` is online: it
  answers; why its data does not arrive is in the sync journal;
* `offline` — anything else: the latest attempt timed out or failed, or the last answer is too old (the
  vehicle stopped answering, or nothing has polled it lately).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Literal

VehicleStatus = Literal["online", "offline", "unknown"]

ONLINE: Final = "online"
OFFLINE: Final = "offline"
UNKNOWN: Final = "unknown"
ERROR: Final = "error"  # a `sync_status` value only: answers, but cannot be synced

# How many sync intervals an answer stays fresh.
FRESH_INTERVALS = 2


def derive_status(
    last_seen_at: datetime | None,
    sync_status: str | None,
    now: datetime,
    interval: float | timedelta,
) -> VehicleStatus:
    """Return `online`, `offline` or `unknown` for a vehicle (see the module docstring)."""
    if last_seen_at is None:
        return OFFLINE if sync_status == OFFLINE else UNKNOWN
    if sync_status == OFFLINE:
        return OFFLINE
    window = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
    age = now - last_seen_at
    # A last_seen_at slightly ahead of `now` (clock skew between workers) still counts as fresh.
    return ONLINE if age <= FRESH_INTERVALS * window else OFFLINE
