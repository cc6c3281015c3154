"""The status board's ordering of facts: a poll report made after a sweep's read began outlives that read."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fleet.db.queries.live import VehicleFacts
from fleet.live.status import StatusBoard
from fleet.vehicle_status import OFFLINE, ONLINE


def test_a_sweep_read_before_an_offline_report_does_not_bring_online_back() -> None:
    changes: list[tuple[int, str]] = []
    board = StatusBoard(90.0, lambda vehicle_id, state, _at, _reason: changes.append((vehicle_id, state)))
    now = datetime.now(UTC)
    board.pull_report(7, now, ONLINE)
    assert changes == [(7, ONLINE)]

    read_at = time.monotonic()  # a sweep starts reading: the row still says the pull answered
    stale = VehicleFacts(vehicle_id=7, pull_seen_at=now, sync_status=ONLINE, tracker_seen_at=None)
    board.pull_report(7, None, OFFLINE)  # meanwhile the poller lost the vehicle (written, then reported)
    board.load([stale], complete=True, read_at=read_at)
    assert changes == [(7, ONLINE), (7, OFFLINE)]
    assert board.current(7) is not None and board.current(7)[0] == OFFLINE  # type: ignore[index]

    # A read that began after the report is the database's word again.
    fresh = VehicleFacts(vehicle_id=7, pull_seen_at=now, sync_status=ONLINE, tracker_seen_at=None)
    board.load([fresh], complete=True, read_at=time.monotonic())
    assert changes[-1] == (7, ONLINE)
