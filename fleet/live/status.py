"""Vehicle statuses for the live streams: the inputs of the one status rule, kept current, and their changes.

The rule is `fleet.vehicle_status.derive_status`, the Python twin of the SQL the REST API uses, applied to the
same facts: the vehicle's last answered pull and the outcome of its latest pull attempt (`vehicles.last_seen_at`,
`sync_status`) and its trackers' last activity. Facts arrive from three places:

* a sweep every `LIVE_STATUS_SWEEP_SEC` reads them for every vehicle from the database (what the sync service
  and the trackers wrote; and the passage of time: a vehicle goes offline when its window runs out, which no
  event announces);
* tracker positions on the bus (a tracker that sends again is online at once);
* live pollers, here and in other API processes (bus topic `vehicle_status`): a watched pull vehicle that stops
  answering is offline within one poll, and online again at the first answer.

Every change of the derived state is handed to `on_change` (the hub tells the viewers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from fleet.db.queries.live import VehicleFacts
from fleet.vehicle_status import ONLINE, VehicleStatus, derive_status, status_reason

OnChange = Callable[[int, str, "datetime | None", "str | None"], None]


@dataclass(slots=True)
class _Entry:
    pull_seen_at: datetime | None
    sync_status: str | None
    tracker_seen_at: datetime | None
    state: VehicleStatus | None = None
    reported_at: float = float("-inf")  # monotonic time of this process's last poll report

    @property
    def last_activity_at(self) -> datetime | None:
        times = [t for t in (self.pull_seen_at, self.tracker_seen_at) if t is not None]
        return max(times) if times else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class StatusBoard:
    """The facts and derived status of every vehicle known to this process's live streams."""

    def __init__(self, window_sec: float, on_change: OnChange) -> None:
        self.window_sec = window_sec
        self._on_change = on_change
        self._entries: dict[int, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def current(self, vehicle_id: int) -> tuple[VehicleStatus, datetime | None, str | None] | None:
        """The vehicle's state, last activity and reason (None when the board does not know it)."""
        entry = self._entries.get(vehicle_id)
        if entry is None or entry.state is None:
            return None
        return entry.state, entry.last_activity_at, status_reason(entry.state, entry.sync_status)

    def load(self, facts: Iterable[VehicleFacts], *, complete: bool, read_at: float | None = None) -> None:
        """Take facts read from the database; `complete`: they cover every vehicle (others are forgotten).

        `read_at` (monotonic, when known) is when the read began: a poll report made here after it is newer than the
        database row the read saw, so the read's `sync_status` does not overwrite it (the poller wrote it to
        the database before reporting; the next sweep reads it)."""
        now = datetime.now(UTC)
        seen = set()
        for fact in facts:
            seen.add(fact.vehicle_id)
            entry = self._entries.get(fact.vehicle_id)
            if entry is None:
                entry = self._entries[fact.vehicle_id] = _Entry(
                    fact.pull_seen_at, fact.sync_status, fact.tracker_seen_at
                )
            else:
                entry.pull_seen_at = _later(entry.pull_seen_at, fact.pull_seen_at)
                if read_at is None or entry.reported_at < read_at:
                    entry.sync_status = fact.sync_status
                entry.tracker_seen_at = _later(entry.tracker_seen_at, fact.tracker_seen_at)
            self._derive(fact.vehicle_id, entry, now, announce_new=False)
        if complete:
            for gone in set(self._entries) - seen:
                del self._entries[gone]

    def tracker_seen(self, vehicle_id: int, at: datetime) -> None:
        """A tracker of the vehicle stored data."""
        entry = self._entries.get(vehicle_id)
        if entry is None:
            entry = self._entries[vehicle_id] = _Entry(None, None, at)
        else:
            entry.tracker_seen_at = _later(entry.tracker_seen_at, at)
            if entry.state == ONLINE:  # fresher activity cannot change an online vehicle: skip the clock
                return
        self._derive(vehicle_id, entry, datetime.now(UTC), announce_new=True)

    def pull_report(self, vehicle_id: int, pull_seen_at: datetime | None, sync_status: str | None) -> None:
        """A poller answered (`pull_seen_at`, status `online`) or failed (status `offline`)."""
        entry = self._entries.get(vehicle_id)
        if entry is None:
            entry = self._entries[vehicle_id] = _Entry(pull_seen_at, sync_status, None)
        else:
            entry.pull_seen_at = _later(entry.pull_seen_at, pull_seen_at)
            if sync_status is not None:
                entry.sync_status = sync_status
        entry.reported_at = time.monotonic()
        self._derive(vehicle_id, entry, datetime.now(UTC), announce_new=True)

    def _derive(self, vehicle_id: int, entry: _Entry, now: datetime, *, announce_new: bool) -> None:
        """Apply the rule; announce a change (a vehicle read for the first time from the database is not one:
        viewers take the starting state from the REST API)."""
        state = derive_status(
            pull_seen_at=entry.pull_seen_at,
            sync_status=entry.sync_status,
            tracker_seen_at=entry.tracker_seen_at,
            now=now,
            window=self.window_sec,
        )
        if state != entry.state:
            first = entry.state is None
            entry.state = state
            if not first or announce_new:
                self._on_change(
                    vehicle_id, state, entry.last_activity_at, status_reason(state, entry.sync_status)
                )
