"""The fleet stream's routing: which viewers see which vehicle, and one position per vehicle per interval.

Viewers are grouped by account (`Audience`, with the set of vehicles the account sees). An index maps each
vehicle to the owner audiences that see it, and superuser audiences are kept apart as "see everything": routing
a position costs the viewers it reaches, not the viewers connected (1,000 viewers of 200 owners: a position
touches the 5 viewers of its vehicle's owner).

Positions are coalesced per vehicle: at most one per window of `LIVE_FLEET_INTERVAL_SEC`, the newest winning.
Windows are fixed slices of the clock — each vehicle's offset by a phase of its own, so that held positions do
not all go out at the same instant — not intervals measured from the last send: a vehicle reporting about once a
second has each position sent at once, instead of every one waiting a little longer than the one before. A
position is held only when its window already had one, and goes out when the next window opens.

Viewers that asked for batches (`?batch=1`) collect their positions, one per vehicle, and get them together as
one `positions` message every `LIVE_FLEET_BATCH_SEC` (`flush_batches`, called by the hub).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable
from dataclasses import dataclass

from fleet.live import metrics
from fleet.live.access import Audience
from fleet.live.viewer import Viewer

# Spreads the vehicles' windows over the interval (the golden ratio's fraction: evenly, whatever the ids).
_GOLDEN = 0.6180339887498949


@dataclass(slots=True)
class _Throttle:
    """One vehicle's coalescing: its phase, the window of its last position, what waits for the next."""

    phase: float
    window: int = -(2**62)
    pending: str | None = None
    handle: asyncio.TimerHandle | None = None


class FleetRoutes:
    """The fleet stream's viewers by vehicle, and the per-vehicle coalescing of positions."""

    def __init__(self) -> None:
        self.viewers = 0
        self._batched: set[Viewer] = set()  # viewers that take positions in batches
        self._all: set[Audience] = set()
        self._by_vehicle: dict[int, set[Audience]] = {}
        self._throttle: dict[int, _Throttle] = {}

    # --- membership ---------------------------------------------------------------------------------------------
    def add(self, audience: Audience, viewer: Viewer, visible: frozenset[int] | None) -> None:
        """A fleet viewer of `audience`; `visible` is what the account sees now (None: everything)."""
        if not audience.superuser:
            self.reindex(audience, visible)
        audience.fleet.add(viewer)
        if len(audience.fleet) == 1:
            self._index(audience)
        if viewer.batched:
            self._batched.add(viewer)
        self.viewers += 1

    def remove(self, audience: Audience, viewer: Viewer) -> bool:
        """Forget a fleet viewer; False when it was not registered."""
        if viewer not in audience.fleet:
            return False
        audience.fleet.discard(viewer)
        self._batched.discard(viewer)
        if not audience.fleet:
            self._unindex(audience)
        self.viewers -= 1
        return True

    def reindex(self, audience: Audience, visible: frozenset[int] | None) -> None:
        """The account now sees `visible`."""
        if visible == audience.visible:
            return
        indexed = bool(audience.fleet)
        if indexed:
            self._unindex(audience)
        audience.visible = visible
        if indexed:
            self._index(audience)

    def _index(self, audience: Audience) -> None:
        if audience.visible is None:
            self._all.add(audience)
            return
        for vehicle_id in audience.visible:
            self._by_vehicle.setdefault(vehicle_id, set()).add(audience)

    def _unindex(self, audience: Audience) -> None:
        self._all.discard(audience)
        for vehicle_id in audience.visible or ():
            audiences = self._by_vehicle.get(vehicle_id)
            if audiences is not None:
                audiences.discard(audience)
                if not audiences:
                    del self._by_vehicle[vehicle_id]

    # --- delivery ------------------------------------------------------------------------------------------------
    def broadcast(self, vehicle_id: int, key: Hashable, text: str, kind: str) -> None:
        """Offer a message about a vehicle to every fleet viewer that sees it (positions of batched viewers
        wait for their next batch)."""
        count = 0
        audiences = (*self._all, *self._by_vehicle.get(vehicle_id, ()))
        if kind == "position":
            for audience in audiences:
                for viewer in audience.fleet:
                    viewer.offer_position(vehicle_id, key, text)
                count += len(audience.fleet)
        else:
            for audience in audiences:
                for viewer in audience.fleet:
                    viewer.offer(key, text)
                count += len(audience.fleet)
        if count:
            metrics.MESSAGE_COUNTERS[("fleet", kind)].inc(count)

    def flush_batches(self) -> None:
        """Send every batched viewer its collected positions."""
        sent = 0
        for viewer in self._batched:
            sent += viewer.flush_batch() > 0
        if sent:
            metrics.MESSAGE_COUNTERS[("fleet", "positions")].inc(sent)

    def position(self, vehicle_id: int, key: Hashable, text: str, interval: float) -> None:
        """A vehicle's new position: now, or when its next window opens (see the module docstring)."""
        if interval <= 0:
            self.broadcast(vehicle_id, key, text, "position")
            return
        throttle = self._throttle.get(vehicle_id)
        if throttle is None:
            throttle = self._throttle[vehicle_id] = _Throttle((vehicle_id * _GOLDEN) % 1.0 * interval)
        if throttle.handle is not None:
            throttle.pending = text  # the next window is already booked: the newest waits for it
            return
        loop = asyncio.get_running_loop()
        window = math.floor((loop.time() - throttle.phase) / interval)
        if window > throttle.window:
            throttle.window = window
            self.broadcast(vehicle_id, key, text, "position")
            return
        throttle.pending = text
        throttle.window = window + 1  # booked for the position that waits
        opens = throttle.window * interval + throttle.phase
        throttle.handle = loop.call_at(opens, self._flush, vehicle_id)

    def _flush(self, vehicle_id: int) -> None:
        throttle = self._throttle[vehicle_id]
        throttle.handle = None
        text, throttle.pending = throttle.pending, None
        if text is not None:
            self.broadcast(vehicle_id, ("p", vehicle_id), text, "position")

    def close(self) -> None:
        for throttle in self._throttle.values():
            if throttle.handle is not None:
                throttle.handle.cancel()
