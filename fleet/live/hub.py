"""The live hub of one API process: one subscription per bus topic, fanned out to the process's viewers.

What comes in — positions committed by ingestion or the sync service, tracker events, pulled alarms, device
commands, status facts of other processes' pollers (bus topics, docs/LIVE.md), values and positions of this
process's pollers, status changes of the `StatusBoard` — is turned into a message once, as text, and offered
to the viewers that may see the vehicle:

* vehicle streams: a dict from vehicle id to its viewers;
* the fleet stream: `fleet.FleetRoutes` (viewers by account, an index from vehicle to the accounts that see
  it, one position per vehicle per `LIVE_FLEET_INTERVAL_SEC`). What an account sees is resolved through RLS
  when its first viewer connects and re-checked every `LIVE_ACCESS_REFRESH_SEC` (`access.refresh`).

A one-second tick sends heartbeats after `LIVE_HEARTBEAT_SEC` of silence, closes viewers whose access token
expired (4401 `token_expired`) and re-checks accounts; a periodic job (`live-status-sweep`, fleet.ops.jobs:
failures logged once per episode, exported in `fleet_job_*`, named by /ready) re-reads every vehicle's status
facts. The pollers follow the same contract but are not registered jobs: they come and go with viewers, one per
watched vehicle, and a job label per vehicle would be unbounded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.live import vehicle_facts
from fleet.live import messages, metrics
from fleet.live.access import (
    CLOSE_POLICY,
    CLOSE_UNAUTHORIZED,
    Audience,
    Identity,
    Refusal,
    refresh,
)
from fleet.live.fleet import FleetRoutes
from fleet.live.poller import Pollers, VehiclePoller
from fleet.live.status import StatusBoard
from fleet.live.viewer import Viewer
from fleet.ops.bus import LiveBus, Subscription
from fleet.ops.jobs import JobRegistry, PeriodicJob
from fleet.vehicle_status import online_window_sec

log = structlog.get_logger(__name__)

TOPICS = ("positions", "events", "alarms", "vehicle_status", "commands")
STATUS_TOPIC = "vehicle_status"
# The hub's own bus backlog: a burst of a whole fleet's commits must not be dropped before it is routed.
SUBSCRIPTION_BACKLOG = 50_000
TICK_SEC = 1.0
# Accounts re-checked per tick at most (spreads the queries when thousands are due together).
REFRESH_PER_TICK = 50
# Tracker events remembered to recognise a retransmitted one (the ingest publishes what it committed;
# a frame sent again after a lost ACK is stored once but may be published twice).
EVENT_MEMORY = 10_000


class LiveHub:
    """Routes live data to this process's WebSocket viewers (see the module docstring)."""

    def __init__(
        self, settings: Settings, db: Database, bus: LiveBus | None, jobs: JobRegistry | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.origin = f"{os.getpid()}:{secrets.token_hex(4)}"  # tells this process's bus messages apart
        self.board = StatusBoard(online_window_sec(settings.sync_interval_sec), self._status_changed)
        self.pollers = Pollers(db, settings, self)
        self._audiences: dict[int | None, Audience] = {}
        self.fleet = FleetRoutes()
        self._vehicle_viewers: dict[int, set[Viewer]] = {}
        self._viewers = 0
        self._last_position: dict[int, float] = {}
        self._events_seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._refreshing: asyncio.Task[None] | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing: set[str] = set()
        self._jobs = jobs
        # Statuses whose window ran out, and what the sync service wrote: read again while anyone watches.
        self.sweep = PeriodicJob(
            "live-status-sweep",
            self._sweep_once,
            interval=lambda: self.settings.live_status_sweep_sec,
            run_at_start=False,  # ensure_started runs the first one
        )

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        """Subscribe to the bus and start the tick and the sweep (at the first viewer; idempotent)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            self._loop = asyncio.get_running_loop()
            await self.sweep.run_once()
            if self.bus is not None:
                for topic in TOPICS:
                    subscription = await self.bus.subscribe(topic, maxsize=SUBSCRIPTION_BACKLOG)
                    self._subscriptions.append(subscription)
                    self._tasks.append(self._spawn(self._consume(subscription), f"live-bus-{topic}"))
            self._tasks.append(self._spawn(self._tick(), "live-tick"))
            self._tasks.append(self._spawn(self._batches(), "live-fleet-batches"))
            if self._jobs is not None:
                self._jobs.add(self.sweep)  # /ready and fleet_job_* see it
            self._tasks.append(self._spawn(self.sweep.run(), "live-status-sweep"))
            self._started = True

    async def close(self) -> None:
        """Close every viewer (1001 going away), stop pollers, leave the bus."""
        for audience in list(self._audiences.values()):
            for viewer in audience.viewers:
                viewer.end(1001, messages.error("server_shutdown", "the server is restarting; reconnect"))
        self.sweep.stop()
        if self._jobs is not None:
            self._jobs.remove(self.sweep)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        self.fleet.close()
        await self.pollers.close()

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]

    # --- viewers -----------------------------------------------------------------------------------------------
    @property
    def viewer_count(self) -> int:
        return self._viewers

    def check_capacity(self, identity: Identity) -> None:
        """Refuse (1008) a viewer beyond the process's or the account's limit."""
        if self._viewers >= self.settings.live_max_viewers:
            raise Refusal(
                CLOSE_POLICY,
                "too_many_connections",
                "this server has no room for more viewers",
                "too_many_connections",
            )
        audience = self._audiences.get(identity.user_id)
        if (
            audience is not None
            and len(audience.fleet) + len(audience.vehicle) >= self.settings.live_max_viewers_per_user
        ):
            raise Refusal(
                CLOSE_POLICY,
                "too_many_connections",
                f"at most {self.settings.live_max_viewers_per_user} live streams per account",
                "too_many_connections",
            )

    def _audience(self, identity: Identity) -> Audience:
        audience = self._audiences.get(identity.user_id)
        if audience is None:
            everything = identity.superuser or identity.user_id is None
            audience = Audience(identity.user_id, everything, visible=None if everything else frozenset())
            self._audiences[identity.user_id] = audience
        return audience

    def add_fleet_viewer(self, viewer: Viewer, visible: frozenset[int] | None) -> None:
        """Register a fleet viewer; `visible` is what its account sees now (None: everything)."""
        self.fleet.add(self._audience(viewer.identity), viewer, visible)
        self._viewers += 1
        metrics.VIEWER_GAUGES["fleet"].inc()

    def add_vehicle_viewer(self, viewer: Viewer, pull: bool) -> VehiclePoller | None:
        """Register a vehicle viewer; a pull vehicle's poller starts with its first viewer."""
        assert viewer.vehicle_id is not None
        audience = self._audience(viewer.identity)
        audience.vehicle.add(viewer)
        self._vehicle_viewers.setdefault(viewer.vehicle_id, set()).add(viewer)
        self._viewers += 1
        metrics.VIEWER_GAUGES["vehicle"].inc()
        return self.pollers.watch(viewer.vehicle_id) if pull else None

    async def remove(self, viewer: Viewer, *, pull: bool = False) -> None:
        audience = self._audiences.get(viewer.identity.user_id)
        if viewer.stream == "fleet":
            if audience is not None and self.fleet.remove(audience, viewer):
                self._viewers -= 1
                metrics.VIEWER_GAUGES["fleet"].dec()
        else:
            assert viewer.vehicle_id is not None
            viewers = self._vehicle_viewers.get(viewer.vehicle_id)
            if audience is not None and viewer in audience.vehicle:
                audience.vehicle.discard(viewer)
                self._viewers -= 1
                metrics.VIEWER_GAUGES["vehicle"].dec()
            if viewers is not None:
                viewers.discard(viewer)
                if not viewers:
                    del self._vehicle_viewers[viewer.vehicle_id]
            if pull:
                await self.pollers.unwatch(viewer.vehicle_id)
        if audience is not None and not audience.fleet and not audience.vehicle:
            self._audiences.pop(audience.user_id, None)

    def rebind(self, viewer: Viewer, identity: Identity) -> None:
        """A viewer presented a fresh token of the same account."""
        viewer.identity = identity

    def offer(self, viewer: Viewer, text: str, kind: str) -> None:
        """Queue a message of its own (never coalesced) for one viewer."""
        viewer.offer(next(self._keys), text)
        metrics.MESSAGE_COUNTERS[(viewer.stream, kind)].inc()

    def _vehicle_broadcast(self, vehicle_id: int, key: Hashable | None, text: str, kind: str) -> None:
        viewers = self._vehicle_viewers.get(vehicle_id)
        if not viewers:
            return
        for viewer in viewers:
            viewer.offer(key if key is not None else next(self._keys), text)
        metrics.MESSAGE_COUNTERS[("vehicle", kind)].inc(len(viewers))

    # --- what comes in --------------------------------------------------------------------------------------------
    async def _consume(self, subscription: Subscription) -> None:
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"_on_{subscription.topic}")
        async for payload in subscription:
            if type(payload) is not dict:
                continue
            try:
                handler(payload)
            except Exception:  # one bad payload must not stop the stream for everyone
                if subscription.topic not in self._failing:
                    self._failing.add(subscription.topic)
                    log.exception("live_payload_failed", topic=subscription.topic)

    def _on_positions(self, payload: dict[str, Any]) -> None:
        vehicle_id = payload.get("vehicle_id")
        if type(vehicle_id) is not int:
            return
        if payload.get("source") != "pull":
            committed = payload.get("committed_at")
            seen = datetime.fromtimestamp(committed, UTC) if type(committed) is float else datetime.now(UTC)
            self.board.tracker_seen(vehicle_id, seen)
        self._position(vehicle_id, payload, fleet=True)

    def poll_position(self, vehicle_id: int, payload: dict[str, Any]) -> None:
        """A position from a watched pull vehicle's GPS channels (this process's viewers of it only)."""
        self._position(vehicle_id, payload, fleet=False)

    def _position(self, vehicle_id: int, payload: dict[str, Any], *, fleet: bool) -> None:
        if payload.get("latitude") is None or payload.get("longitude") is None:
            return
        at = messages.epoch(payload.get("time"))
        last = self._last_position.get(vehicle_id)
        if at is None or (last is not None and at <= last):
            return  # not newer than what viewers have (a gap fill, a repeated publish)
        self._last_position[vehicle_id] = at
        text = messages.dumps(messages.position(payload))
        key = ("p", vehicle_id)
        self._vehicle_broadcast(vehicle_id, key, text, "position")
        if fleet and self.fleet.viewers:
            self.fleet.position(vehicle_id, key, text, self.settings.live_fleet_interval_sec)

    def _on_events(self, payload: dict[str, Any]) -> None:
        vehicle_id = payload.get("vehicle_id")
        if type(vehicle_id) is not int:
            return
        identity = (
            payload.get("device_id"),
            payload.get("time"),
            payload.get("code"),
            payload.get("record_index"),
        )
        if identity in self._events_seen:
            return
        self._events_seen[identity] = None
        if len(self._events_seen) > EVENT_MEMORY:
            self._events_seen.popitem(last=False)
        self._vehicle_broadcast(vehicle_id, None, messages.dumps(messages.event(payload)), "event")
        if payload.get("kind") == "alarm":
            self._vehicle_broadcast(
                vehicle_id, None, messages.dumps(messages.tracker_alarm(payload)), "alarm"
            )

    def _on_alarms(self, payload: dict[str, Any]) -> None:
        vehicle_id = payload.get("vehicle_id")
        if type(vehicle_id) is int:
            self._vehicle_broadcast(
                vehicle_id, None, messages.dumps(messages.vehicle_alarm(payload)), "alarm"
            )

    def _on_commands(self, payload: dict[str, Any]) -> None:
        vehicle_id = payload.get("vehicle_id")
        if type(vehicle_id) is int:
            self._vehicle_broadcast(vehicle_id, None, messages.dumps(messages.command(payload)), "command")

    def _on_vehicle_status(self, payload: dict[str, Any]) -> None:
        vehicle_id = payload.get("vehicle_id")
        if type(vehicle_id) is not int or payload.get("origin") == self.origin:
            return
        seen = payload.get("pull_seen_at")
        pull_seen_at = datetime.fromisoformat(seen) if isinstance(seen, str) else None
        status = payload.get("sync_status")
        self.board.pull_report(vehicle_id, pull_seen_at, status if isinstance(status, str) else None)

    def poll_values(self, vehicle_id: int, message: dict[str, Any]) -> None:
        """A watched pull vehicle's newest values: the latest full set replaces one still queued."""
        self._vehicle_broadcast(vehicle_id, ("v", vehicle_id), messages.dumps(message), "values")

    def poll_reachability(self, vehicle_id: int, pull_seen_at: datetime | None, sync_status: str) -> None:
        """A poller reached the vehicle again, or lost it: update the status here and tell other processes."""
        self.board.pull_report(vehicle_id, pull_seen_at, sync_status)
        if self.bus is not None:
            payload = {
                "type": "vehicle_status",
                "vehicle_id": vehicle_id,
                "pull_seen_at": pull_seen_at.isoformat() if pull_seen_at is not None else None,
                "sync_status": sync_status,
                "origin": self.origin,
            }
            self._spawn(self._publish(STATUS_TOPIC, payload), "live-publish-status")

    async def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        assert self.bus is not None
        try:
            await self.bus.publish(topic, payload)
        except Exception as err:  # best effort: the other processes' sweep catches up
            log.warning("live_publish_failed", topic=topic, error=str(err))

    def _status_changed(
        self, vehicle_id: int, state: str, last_activity_at: datetime | None, reason: str | None
    ) -> None:
        text = messages.dumps(messages.status(vehicle_id, state, last_activity_at, reason))
        key = ("s", vehicle_id)
        self._vehicle_broadcast(vehicle_id, key, text, "status")
        if self.fleet.viewers:
            self.fleet.broadcast(vehicle_id, key, text, "status")

    # --- the tick and the sweep ---------------------------------------------------------------------------------
    async def _batches(self) -> None:
        """Send batched fleet viewers their positions every LIVE_FLEET_BATCH_SEC."""
        while True:
            await asyncio.sleep(self.settings.live_fleet_batch_sec)
            try:
                self.fleet.flush_batches()
            except Exception:
                log.exception("live_batches_failed")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SEC)
            try:
                self._tick_once()
            except Exception:
                log.exception("live_tick_failed")

    def _tick_once(self) -> None:
        now = time.monotonic()
        wall = time.time()
        heartbeat = self.settings.live_heartbeat_sec
        beat: str | None = None
        due: list[Audience] = []
        for audience in self._audiences.values():
            for viewer in audience.viewers:
                expires = viewer.identity.expires_at
                if expires is not None and wall >= expires:
                    self.end(
                        viewer,
                        CLOSE_UNAUTHORIZED,
                        "token_expired",
                        "the access token expired; reconnect with a fresh one",
                        "token_expired",
                    )
                elif now - viewer.last_sent >= heartbeat and not viewer.queued:
                    beat = beat or messages.heartbeat(datetime.now(UTC))
                    viewer.offer(("hb",), beat)
                    viewer.last_sent = now
                    metrics.MESSAGE_COUNTERS[(viewer.stream, "heartbeat")].inc()
            if (
                audience.user_id is not None
                and now - audience.refreshed_at >= self.settings.live_access_refresh_sec
            ):
                due.append(audience)
        if due and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = self._spawn(self._refresh(due[:REFRESH_PER_TICK]), "live-access-refresh")

    async def _refresh(self, audiences: Iterable[Audience]) -> None:
        for audience in audiences:
            try:
                visible, closing = await refresh(self.db, audience)
            except Exception as err:  # the database may be down: keep the viewers, try again next time
                log.warning("live_access_refresh_failed", user_id=audience.user_id, error=str(err))
                continue
            if not audience.superuser:
                self.fleet.reindex(audience, visible)
            for item in closing:
                self.end(item.viewer, item.close_code, item.code, item.message, item.reason)

    def end(self, viewer: Viewer, close_code: int, code: str, message: str, reason: str) -> None:
        """Tell a viewer why, then close it."""
        if viewer.close_code is not None:
            return
        metrics.REJECTED.labels(reason).inc()
        metrics.MESSAGE_COUNTERS[(viewer.stream, "error")].inc()
        viewer.end(close_code, messages.error(code, message), reason=code)

    async def _sweep_once(self) -> None:
        """Read every vehicle's status facts (skipped while nobody watches)."""
        if self._started and not self._viewers:
            return
        read_at = time.monotonic()
        async with self.db.system() as conn:
            facts = await vehicle_facts(conn)
        self.board.load(facts, complete=True, read_at=read_at)

    def apply_settings(self, settings: Settings) -> None:
        """Use reloaded settings (hot reload): intervals, limits and queue sizes of new viewers."""
        self.settings = settings
        self.pollers.apply_settings(settings)

    # --- for tests and the bench -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "viewers": self._viewers,
            "fleet_viewers": self.fleet.viewers,
            "audiences": len(self._audiences),
            "pollers": len(self.pollers),
            "vehicles_with_status": len(self.board),
        }

    def viewers(self) -> list[Viewer]:
        return [v for a in self._audiences.values() for v in a.viewers]
