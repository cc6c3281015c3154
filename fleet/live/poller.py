"""Live pollers: while someone watches a pull vehicle, one task per vehicle asks `GET /data/latest` every 2 s.

One poller per vehicle per API process, whatever the number of its viewers: the first viewer starts it, the
last one leaving stops it. Requests go through the sync service's own HTTP client code (`VehiclePuller`,
`open_client`: byte caps, one deadline, no proxies, one kept-alive connection per vehicle) in a client shared
by the process's pollers. The sync service keeps pulling the vehicle independently; the poller stores nothing
of the values (the sync does, from `/data`), only the facts of the status rule.

Cadence and errors follow the coordinator contract: the next poll starts `LIVE_POLL_INTERVAL_SEC` after the
previous one ended; a failure is logged once when the vehicle starts failing and once when it recovers. A
vehicle that cannot be reached (timeout, connection refused) is offline at once — written to
`vehicles.sync_status` and announced — and online again at its first answer. One that answers with an error
(HTTP error, broken body, refused key) is reachable: it stays as it was, and the values simply do not come.
While the vehicle answers, `vehicles.last_seen_at` is refreshed every third of the online window, so the REST
API and the streams keep agreeing even when no sync service runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.live import PollTarget, note_pull_answered, note_pull_failed, poll_target
from fleet.db.queries.sync import stored_channels
from fleet.live import metrics
from fleet.live.messages import zulu
from fleet.sync import gps
from fleet.sync.errors import PullError, PullTimeout, PullUnreachable
from fleet.sync.models import ChannelInfo, LatestValue, VehicleTarget
from fleet.sync.puller import VehiclePuller, open_client
from fleet.sync.transport import FleetTransport
from fleet.vehicle_status import OFFLINE, ONLINE

log = structlog.get_logger(__name__)

# A poll must end well before the next is due; a vehicle on LTE may still take a few seconds.
MAX_POLL_TIMEOUT_SEC = 5.0
# Channel names are read again when an unknown channel shows up, at most this often.
CHANNEL_RELOAD_SEC = 60.0
# Connections the pollers of one process may hold (one per watched vehicle).
MAX_POLLER_CONNECTIONS = 500


class PollSink(Protocol):
    """What a poller reports to (the hub)."""

    def poll_values(self, vehicle_id: int, message: dict[str, Any]) -> None: ...

    def poll_position(self, vehicle_id: int, payload: dict[str, Any]) -> None: ...

    def poll_reachability(self, vehicle_id: int, pull_seen_at: datetime | None, sync_status: str) -> None: ...


@dataclass(slots=True)
class _Watch:
    poller: VehiclePoller
    task: asyncio.Task[None]
    viewers: int = 1


class VehiclePoller:
    """The poll loop of one vehicle and its last known values."""

    def __init__(
        self,
        vehicle_id: int,
        sink: PollSink,
        db: Database,
        settings: Settings,
        client: httpx.AsyncClient,
        pool: FleetTransport | None,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.requests = 0
        self.values: dict[int, dict[str, Any]] = {}  # channel id → value item, for a new viewer's hello
        self._sink = sink
        self._db = db
        self.settings = settings
        self._client = client
        self._pool = pool
        self._channels: dict[int, ChannelInfo] = {}
        self._channels_loaded_at = float("-inf")
        self._gps: gps.GpsChannels | None = None
        self._explicit: dict[str, Any] | None = None
        self._reachable: bool | None = None
        self._failing = False
        self._last_written = float("-inf")
        self._last_position_time: datetime | None = None

    async def run(self) -> None:
        """Poll until cancelled (returns at once for a vehicle that cannot be polled)."""
        async with self._db.system() as conn:
            target = await poll_target(conn, self.vehicle_id)
        if target is None or target.host is None:
            return
        default = self.settings.vehicle_default_api_key
        api_key = target.api_key or (default.get_secret_value() if default is not None else None)
        if not api_key:
            log.info("live_poll_skipped", vehicle_id=self.vehicle_id, reason="no API key configured")
            return
        self._explicit = target.gps_channels
        timeout = min(self.settings.pull_timeout_sec, MAX_POLL_TIMEOUT_SEC)
        async with VehiclePuller(
            self._client, _target(target, api_key), api_key, timeout=timeout, max_rows=1, pool=self._pool
        ) as puller:
            await self._load_channels(puller)
            while True:
                await self._poll(puller)
                await asyncio.sleep(self.settings.live_poll_interval_sec)

    async def _poll(self, puller: VehiclePuller) -> None:
        self.requests += 1
        now = datetime.now(UTC)
        try:
            _, values, _rejected = await puller.latest(now=now)
        except PullError as err:
            await self._failed(err)
            return
        except Exception:  # a bug: keep polling, log it once per episode
            if not self._failing:
                log.exception("live_poll_crashed", vehicle_id=self.vehicle_id)
                self._failing = True
            metrics.POLL_FAILURES.inc()
            return
        if self._failing:
            log.info("live_poll_recovered", vehicle_id=self.vehicle_id)
            self._failing = False
        await self._answered(now)
        if any(v.channel_id not in self._channels for v in values):
            await self._load_channels(puller)
        self._publish(values)

    async def _failed(self, err: PullError) -> None:
        metrics.POLL_FAILURES.inc()
        if not self._failing:
            log.warning("live_poll_failing", vehicle_id=self.vehicle_id, kind=err.kind, error=str(err))
            self._failing = True
        if isinstance(err, PullTimeout | PullUnreachable) and self._reachable is not False:
            try:
                async with self._db.system() as conn:
                    await note_pull_failed(conn, self.vehicle_id)
            except Exception as db_err:  # the database being down must not stop the poller
                # Not written: the status sweep would bring the old row back; the next failing poll retries.
                log.warning("live_poll_status_not_written", vehicle_id=self.vehicle_id, error=str(db_err))
            else:
                self._reachable = False
            self._sink.poll_reachability(self.vehicle_id, None, OFFLINE)

    async def _answered(self, now: datetime) -> None:
        refresh = self.settings.sync_interval_sec  # a third of the online window
        if self._reachable is True and time.monotonic() - self._last_written < refresh:
            return
        self._reachable = True
        self._last_written = time.monotonic()
        with contextlib.suppress(Exception):
            async with self._db.system() as conn:
                await note_pull_answered(conn, self.vehicle_id, now)
        self._sink.poll_reachability(self.vehicle_id, now, ONLINE)

    def _publish(self, values: list[LatestValue]) -> None:
        changed = []
        for value in values:
            known = self.values.get(value.channel_id)
            time_text = zulu(value.time)
            if known is not None and known["time"] == time_text and known["value"] == value.value:
                continue
            channel = self._channels.get(value.channel_id)
            item = {
                "channel_id": value.channel_id,
                "name": channel.name if channel else None,
                "unit": channel.unit if channel else None,
                "value": value.value,
                "time": time_text,
            }
            self.values[value.channel_id] = item
            changed.append(item)
        if changed:
            self._sink.poll_values(
                self.vehicle_id,
                {
                    "type": "values",
                    "vehicle_id": self.vehicle_id,
                    "time": zulu(datetime.now(UTC)),
                    "values": changed,
                },
            )
        if self._gps is not None:
            self._position(values, self._gps)

    def _position(self, values: list[LatestValue], channels: gps.GpsChannels) -> None:
        by_channel = {v.channel_id: v for v in values}
        latitude, longitude = by_channel.get(channels.latitude), by_channel.get(channels.longitude)
        if latitude is None or longitude is None:
            return
        at = max(latitude.time, longitude.time)
        if self._last_position_time is not None and at <= self._last_position_time:
            return
        rows = [(self.vehicle_id, v.channel_id, at, v.value) for v in values]
        made = gps.positions(self.vehicle_id, rows, channels)
        if not made:
            return
        self._last_position_time = at
        fix = made[-1]
        self._sink.poll_position(
            self.vehicle_id,
            {
                "type": "positions",
                "source": "pull",
                "device_id": None,
                "vehicle_id": self.vehicle_id,
                "time": at.isoformat(),
                "latitude": fix.latitude,
                "longitude": fix.longitude,
                "speed": fix.speed,
                "course": fix.course,
                "altitude": fix.altitude,
                "satellites": fix.satellites,
                "valid": True,
                "committed_at": None,
            },
        )

    async def _load_channels(self, puller: VehiclePuller) -> None:
        if time.monotonic() - self._channels_loaded_at < CHANNEL_RELOAD_SEC:
            return
        self._channels_loaded_at = time.monotonic()
        try:
            async with self._db.system() as conn:
                channels = await stored_channels(conn, self.vehicle_id)
            if not channels:  # never synced yet: ask the vehicle itself (nothing is stored here)
                channels, _ = await puller.channels()
        except PullError as err:
            log.info("live_poll_channels_unavailable", vehicle_id=self.vehicle_id, error=str(err))
            return
        except Exception as err:
            log.warning("live_poll_channels_failed", vehicle_id=self.vehicle_id, error=str(err))
            return
        self._channels = {c.channel_id: c for c in channels}
        self._gps = gps.recognise(channels, self._explicit)


def _target(target: PollTarget, api_key: str) -> VehicleTarget:
    assert target.host is not None
    return VehicleTarget(
        id=target.vehicle_id,
        name=target.name,
        host=target.host,
        port=target.port,
        api_key=api_key,
        last_sync_at=None,
        alarms_synced_at=None,
        sync_failures=0,
    )


@dataclass(slots=True)
class Pollers:
    """The process's pollers, counted by viewers: started with the first, stopped after the last."""

    db: Database
    settings: Settings
    sink: PollSink
    _watches: dict[int, _Watch] = field(default_factory=dict)
    _client: httpx.AsyncClient | None = None
    _pool: FleetTransport | None = None

    def __len__(self) -> int:
        return len(self._watches)

    def apply_settings(self, settings: Settings) -> None:
        """Reloaded settings: the running pollers use them from their next poll."""
        self.settings = settings
        for watch in self._watches.values():
            watch.poller.settings = settings

    def get(self, vehicle_id: int) -> VehiclePoller | None:
        watch = self._watches.get(vehicle_id)
        return watch.poller if watch is not None else None

    def watch(self, vehicle_id: int) -> VehiclePoller:
        """One more viewer of a pull vehicle: start its poller if it is the first."""
        watch = self._watches.get(vehicle_id)
        if watch is not None:
            watch.viewers += 1
            return watch.poller
        if self._client is None:
            self._client, self._pool = open_client(
                MAX_POLLER_CONNECTIONS // 2, self.settings.pull_timeout_sec
            )
        poller = VehiclePoller(vehicle_id, self.sink, self.db, self.settings, self._client, self._pool)
        task = asyncio.get_running_loop().create_task(poller.run(), name=f"live-poll-{vehicle_id}")
        task.add_done_callback(_report_crash)
        self._watches[vehicle_id] = _Watch(poller, task)
        metrics.POLLERS.set(len(self._watches))
        return poller

    async def unwatch(self, vehicle_id: int) -> None:
        """One viewer fewer: stop the poller after the last."""
        watch = self._watches.get(vehicle_id)
        if watch is None:
            return
        watch.viewers -= 1
        if watch.viewers > 0:
            return
        del self._watches[vehicle_id]
        metrics.POLLERS.set(len(self._watches))
        watch.task.cancel()
        await asyncio.gather(watch.task, return_exceptions=True)

    async def close(self) -> None:
        for vehicle_id in list(self._watches):
            watch = self._watches.pop(vehicle_id)
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)
        metrics.POLLERS.set(0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("live_poller_crashed", task=task.get_name(), exc_info=task.exception())
