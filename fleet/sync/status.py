"""Status values the sync service records, and the vehicle status rule it shares with the API.

The sync service records facts: `last_seen_at` (the last successful `/status`) and `sync_status` (the outcome of
the latest attempt: `online` after an answer, `offline` after a timeout or error, `error` when the vehicle
answers but cannot be synced: an unsupported contract version or a failing local database). What they mean
for a vehicle's online/offline/unknown status is decided in one place for every part of the server:
`fleet.vehicle_status` (re-exported here).
"""

from __future__ import annotations

from typing import Final

from fleet.vehicle_status import OFFLINE, ONLINE, UNKNOWN, VehicleStatus, derive_status

__all__ = ["ERROR", "OFFLINE", "ONLINE", "UNKNOWN", "VehicleStatus", "derive_status"]

ERROR: Final = "error"  # a `sync_status` value only: answers, but cannot be synced
