"""What the sync service tells the live bus after a commit: positions of pull vehicles, and alarm changes.

Payloads follow the bus topics of docs/LIVE.md: a pull vehicle's newest stored position goes out on
`positions` in the shape ingestion uses for trackers (`device_id` null, `source` "pull"), so the fleet map
moves pull vehicles the same way; new and resolved alarms go out on `alarms`. Publishing never delays a
commit (fleet.ops.bus.LivePublisher); the bus is best-effort, the database stays the source of truth.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fleet.ops.bus import LivePublisher

if TYPE_CHECKING:
    from fleet.ops.bus import LiveBus
    from fleet.sync.gps import PullPosition
    from fleet.sync.models import AlarmInfo
    from fleet.sync.writer import VehicleWrite

POSITIONS_TOPIC = "positions"
ALARMS_TOPIC = "alarms"


def position_payload(position: PullPosition, count: int, committed_at: float) -> dict[str, Any]:
    """The `positions` payload of a pull vehicle's newest stored position."""
    return {
        "type": "positions",
        "source": "pull",
        "device_id": None,
        "imei": None,
        "vehicle_id": position.vehicle_id,
        "count": count,
        "time": position.time.isoformat(),
        "latitude": position.latitude,
        "longitude": position.longitude,
        "speed": position.speed,
        "course": position.course,
        "altitude": position.altitude,
        "satellites": position.satellites,
        "valid": True,
        "committed_at": committed_at,
    }


def alarm_payload(vehicle_id: int, alarm: AlarmInfo) -> dict[str, Any]:
    """The `alarms` payload of an alarm the vehicle reported (new, or resolved since)."""
    return {
        "type": "alarm",
        "source": "vehicle",
        "vehicle_id": vehicle_id,
        "alarm_id": alarm.alarm_id,
        "channel_id": alarm.channel_id,
        "level": alarm.level,
        "message": alarm.message,
        "time": alarm.raised_at.isoformat(),
        "resolved_at": alarm.resolved_at.isoformat() if alarm.resolved_at is not None else None,
        "active": alarm.resolved_at is None,
    }


class SyncPublisher:
    """Turns committed sync writes into bus payloads."""

    def __init__(self, bus: LiveBus) -> None:
        self._positions = LivePublisher(bus, POSITIONS_TOPIC)
        self._alarms = LivePublisher(bus, ALARMS_TOPIC)

    def committed(self, writes: list[VehicleWrite]) -> None:
        """Called by the writer after a group commit."""
        now = time.time()
        positions = [position_payload(w.positions[-1], len(w.positions), now) for w in writes if w.positions]
        alarms = [alarm_payload(w.vehicle_id, a) for w in writes for a in w.alarms]
        if positions:
            self._positions.add(positions)
        if alarms:
            self._alarms.add(alarms)

    async def close(self) -> None:
        await self._positions.close()
        await self._alarms.close()
