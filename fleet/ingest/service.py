"""The ingest service: one listener per protocol, connection bookkeeping, the shared writer, the bus hooks.

One instance per process (the `ingest` role). It owns every resource of the role and releases them in
reverse order on :meth:`stop`: stop accepting, stop reading, commit what was received (sending the ACKs
of what committed), close the connections. Every protocol of :func:`fleet.protocol.registry.protocols`
whose port is not 0 gets a :class:`Listener`; all of them share the writer, the device registry, the
admission rules, the metrics, the raw-frame archive, device commands and backpressure.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from fleet.db.queries.ingest import DeviceSummary
from fleet.errors import ConfigError
from fleet.ingest import writer as writer_module
from fleet.ingest.admission import Admission
from fleet.ingest.commands import CommandDispatcher
from fleet.ingest.connection import PAUSE_GLOBAL, DeviceConnection
from fleet.ingest.descriptors import DescriptorBudget, descriptor_budget
from fleet.ingest.listener import REUSE_PORT, Listener, migrates_queued_connections
from fleet.ingest.registry import DeviceRegistry
from fleet.ingest.security import SecurityEvents
from fleet.ingest.stats import (
    BACKPRESSURE_EPISODES,
    BACKPRESSURE_SECONDS,
    CONNECTIONS_ACTIVE,
    IngestStats,
)
from fleet.ingest.writer import BatchWriter, Pending
from fleet.ops.bus import LivePublisher
from fleet.protocol.registry import listen_port, protocols

if TYPE_CHECKING:
    from fleet.config import Settings
    from fleet.db import Database
    from fleet.ops.bus import LiveBus

log = structlog.get_logger(__name__)

LIVE_TOPIC = "positions"
EVENTS_TOPIC = "events"  # stored tracker events and alarms (docs/LIVE.md)
MAX_SWEEP_INTERVAL_SEC = 1.0
# A backpressure episode ends once the queue stayed below its low-water mark this long.
BACKPRESSURE_QUIET_SEC = 1.0


def live_event(summary: DeviceSummary, imei: str | None, committed_at: float | None = None) -> dict[str, Any]:
    """Return the compact bus payload for one device's newly stored positions."""
    return {
        "type": "positions",
        "device_id": summary.device_id,
        "imei": imei,
        "vehicle_id": summary.vehicle_id,
        "count": summary.stored,
        "time": summary.last_time.isoformat(),
        "latitude": summary.latitude,
        "longitude": summary.longitude,
        "speed": summary.speed,
        "course": summary.course,
        # Added for the live view: the rest of the newest fix, and when its batch committed (epoch seconds).
        "altitude": summary.altitude,
        "satellites": summary.satellites,
        "valid": summary.valid,
        "committed_at": committed_at,
    }


def event_payloads(item: Pending, vehicle_id: int | None) -> list[dict[str, Any]]:
    """The bus payloads of the tracker events one committed frame stored (topic `events`).

    An out-of-turn alarm's fix is the position row built from the same record; an extra record carries its
    own (in its details).
    """
    out = []
    for event in item.events:
        details = json.loads(event.attributes) if event.attributes else {}
        latitude, longitude = details.get("latitude"), details.get("longitude")
        if latitude is None:
            for position in item.positions:
                if position.record_index == event.record_index and position.device_time == event.time:
                    latitude, longitude = position.latitude, position.longitude
                    break
        out.append(
            {
                "type": "event",
                "device_id": event.device_id,
                "vehicle_id": vehicle_id,
                "kind": event.event_type,
                "code": event.event_code,
                "record_index": event.record_index,
                "time": datetime.fromtimestamp(event.time, UTC).isoformat(),
                "latitude": latitude,
                "longitude": longitude,
                "description": event.description,
                "details": details,
            }
        )
    return out


class IngestService:
    """Accepts device connections and stores what they send (see the package docs).

    Construct it inside the running event loop that will serve it.
    """

    def __init__(self, settings: Settings, db: Database, bus: LiveBus | None = None) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.stats = IngestStats()
        self.registry = DeviceRegistry(
            db, settings.unknown_device_policy, self.stats, settings.unknown_device_policies
        )
        self.admission = Admission(self)
        self.security = SecurityEvents(db)
        self.descriptors: DescriptorBudget | None = None
        self.commands = CommandDispatcher(self)
        self.connections: set[DeviceConnection] = set()
        self.loop = asyncio.get_running_loop()  # construct inside the loop that will serve
        self.writer: BatchWriter
        self.listeners: list[Listener] = []
        self.stopping = False
        self._sweeper: asyncio.Task[None] | None = None
        self._publisher: LivePublisher | None = None
        self._event_publisher: LivePublisher | None = None
        self._pressure_since: float | None = None  # start of the current backpressure episode
        self._pressure_pauses = 0
        self._resume_rotation = 0
        self._episode_end: asyncio.TimerHandle | None = None

    @property
    def ports(self) -> dict[str, int]:
        """Bound port per listening protocol."""
        return {listener.spec.name: listener.port for listener in self.listeners}

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer and one listener per enabled protocol (SERVER_PORT, TELTONIKA_PORT, ...).

        A port of 0 disables that protocol; ``ingest_bind_ephemeral`` binds every enabled one to a free
        port instead (tests and tools; see ``ports``).
        """
        settings = self.settings
        self.loop = asyncio.get_running_loop()
        unknown = sorted(set(settings.unknown_device_policies) - set(protocols()))
        if unknown:
            raise ConfigError(
                f"UNKNOWN_DEVICE_POLICIES names unknown protocols {', '.join(unknown)}; "
                f"known: {', '.join(protocols())}"
            )
        self._budget_descriptors()
        # The writer's own connections (timestamptz from epoch seconds, jsonb from text: its direct COPYs).
        if settings.ingest_direct_copy:
            await self.db.open_writer_pool(writer_module.WRITER_CONCURRENCY)
        self.writer = BatchWriter(
            self.db,
            self.stats,
            window_ms=settings.ingest_batch_window_ms,
            max_records=settings.ingest_batch_max_records,
            high_water=settings.ingest_queue_high_water,
            low_water=settings.ingest_queue_low_water,
            on_pressure=self._on_pressure,
            on_committed=self._on_committed,
            on_events=self._on_events,
            concurrency=writer_module.WRITER_CONCURRENCY,
            direct=settings.ingest_direct_copy,
        )
        self.writer.start()
        if self.bus is not None:
            self._publisher = LivePublisher(self.bus, LIVE_TOPIC)
            self._event_publisher = LivePublisher(self.bus, EVENTS_TOPIC)
        for spec in protocols().values():
            port = listen_port(spec, settings)
            if port == 0:
                continue
            self.listeners.append(
                Listener(self, spec, settings.server_host, 0 if settings.ingest_bind_ephemeral else port)
            )
        if not self.listeners:
            await self.writer.stop(0)
            raise ConfigError("every device protocol is disabled (all their ports are 0)")
        try:
            for listener in self.listeners:
                await listener.start()
        except ConfigError:
            for listener in self.listeners:
                listener.stop_accepting()
            await self.writer.stop(0)
            raise
        self.commands.start()
        self.security.start()
        self._sweeper = self.loop.create_task(self._sweep(), name="ingest-sweep")
        log.info(
            "ingest_listening",
            host=settings.server_host,
            ports=self.ports,
            event_loop=type(self.loop).__module__.split(".")[0],
            unknown_device_policy={name: self.registry.policy_for(name) for name in self.ports},
            allowed_cidrs=settings.ingest_allowed_cidrs or "any",
            max_connections=self.admission.cap,
            reuse_port=REUSE_PORT,
            proxy_protocol=settings.ingest_proxy_protocol,
        )
        if REUSE_PORT and migrates_queued_connections() is False:
            log.info(
                "ingest_reuseport_hint",
                hint="net.ipv4.tcp_migrate_req=0: when this process stops, connections queued for it but "
                "not yet accepted are reset (trackers reconnect); set it to 1 for handovers without that",
            )

    def _budget_descriptors(self) -> None:
        """Raise RLIMIT_NOFILE and cap device connections below it, keeping the reserve (logged)."""
        settings = self.settings
        budget = descriptor_budget(settings.ingest_max_connections, settings.ingest_fd_reserve)
        self.descriptors = budget
        if budget.cap < 1:
            raise ConfigError(
                f"no file descriptors left for device connections: RLIMIT_NOFILE is {budget.limit} "
                f"(hard {budget.hard_limit}), {budget.open_at_start} are open and {budget.reserve} are "
                "reserved for the API, the database and files; raise the limit (LimitNOFILE= in systemd, "
                "ulimit -n) or lower INGEST_FD_RESERVE"
            )
        self.admission.cap = budget.cap
        (log.warning if budget.lowered else log.info)(
            "ingest_descriptor_budget",
            nofile_limit=budget.limit,
            nofile_hard_limit=budget.hard_limit,
            raised_from=budget.raised_from,
            open_at_start=budget.open_at_start,
            reserved=budget.reserve,
            max_connections_configured=budget.configured,
            max_device_connections=budget.cap,
            limited_by="descriptors" if budget.lowered else "INGEST_MAX_CONNECTIONS",
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, commit and acknowledge what was received (within ``grace`` seconds), close."""
        if self.stopping:
            return
        self.stopping = True
        for listener in self.listeners:
            listener.stop_accepting()
        for conn in list(self.connections):
            conn.pause(PAUSE_GLOBAL)
        await self.writer.stop(grace)
        for conn in list(self.connections):
            conn.close("shutdown")
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.commands.stop()
        await self.security.close()
        await self.registry.close()
        for publisher in (self._publisher, self._event_publisher):
            if publisher is not None:
                await publisher.close()
        for listener in self.listeners:
            await listener.wait_closed()
        if self._episode_end is not None:
            self._episode_end.cancel()
            self._episode_end = None
        if self._pressure_since is not None:
            BACKPRESSURE_SECONDS.inc(self.loop.time() - self._pressure_since)
            self._pressure_since = None
        log.info(
            "ingest_stopped", **{k: v for k, v in self.stats.as_dict().items() if k in ("frames", "stored")}
        )

    # --- connections -----------------------------------------------------------------------------------------
    def forget(self, conn: DeviceConnection) -> None:
        self.admission.release(conn)
        if conn in self.connections:
            self.connections.discard(conn)
            CONNECTIONS_ACTIVE.labels(conn.protocol).dec()
        if conn.device is not None:
            self.registry.release(conn.device.id, conn)
        self.commands.connection_lost(conn)

    async def _sweep(self) -> None:
        settings = self.settings
        interval = min(
            MAX_SWEEP_INTERVAL_SEC,
            settings.ingest_handshake_timeout_sec / 4,
            settings.ingest_idle_timeout_sec / 4,
        )
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            self.admission.tick(now)
            for conn in list(self.connections):
                try:
                    conn.check_timeouts(now)
                except Exception:  # one connection's trouble must not stop the sweep for the others
                    log.exception("ingest_sweep_error", peer=conn.peer)

    # --- writer hooks ---------------------------------------------------------------------------------------------
    def _on_pressure(self, paused: bool) -> None:
        """Pause or resume every socket; count and log whole episodes, not each mark crossing.

        While a backlog drains the queue oscillates around the marks (each batch taken drops it below
        low-water, the resumed sockets push it over high-water again); all of that is one episode, which
        ends only after the queue stayed below low-water for ``BACKPRESSURE_QUIET_SEC``.
        """
        writer = self.writer
        if paused:
            for conn in list(self.connections):
                if conn.may_send_telemetry:
                    conn.pause(PAUSE_GLOBAL)
            self._pressure_pauses += 1
            if self._episode_end is not None:
                self._episode_end.cancel()
                self._episode_end = None
            if self._pressure_since is None:
                self._pressure_since = self.loop.time()
                self.stats.backpressure_episodes += 1
                BACKPRESSURE_EPISODES.inc()
                log.warning(
                    "ingest_backpressure_on",
                    queued_records=writer.queued_records,
                    queued_bytes=writer.queued_bytes,
                    high_water=writer.high_water,
                    connections=len(self.connections),
                )
            return
        if not self.stopping:
            # Start at a different connection each time: sockets become readable in the order they are
            # resumed, and the first ones refill the queue - a fixed order would starve the last ones.
            connections = list(self.connections)
            if connections:
                start = self._resume_rotation % len(connections)
                self._resume_rotation += 7919  # a prime stride walks every starting point
                for conn in connections[start:] + connections[:start]:
                    conn.resume(PAUSE_GLOBAL)
        if self._pressure_since is not None and self._episode_end is None:
            self._episode_end = self.loop.call_later(BACKPRESSURE_QUIET_SEC, self._end_episode)

    def _end_episode(self) -> None:
        self._episode_end = None
        if self._pressure_since is None or self.writer.paused:
            return
        paused_for = self.loop.time() - self._pressure_since - BACKPRESSURE_QUIET_SEC
        self._pressure_since = None
        BACKPRESSURE_SECONDS.inc(max(paused_for, 0.0))
        log.info(
            "ingest_backpressure_off",
            episode_s=round(max(paused_for, 0.0), 3),
            pauses=self._pressure_pauses,
            queued_records=self.writer.queued_records,
        )
        self._pressure_pauses = 0

    def _on_committed(self, summaries: list[DeviceSummary]) -> None:
        registry = self.registry
        for summary in summaries:
            registry.note_vehicle(summary.device_id, summary.vehicle_id)
        if self._publisher is not None:
            committed_at = time.time()
            self._publisher.add(
                [live_event(s, registry.imei_of(s.device_id), committed_at) for s in summaries]
            )

    def _on_events(self, items: list[Pending]) -> None:
        if self._event_publisher is not None:
            registry = self.registry
            self._event_publisher.add(
                [
                    p
                    for item in items
                    for p in event_payloads(item, registry.vehicle_of(item.events[0].device_id))
                ]
            )

    # --- stats ---------------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Return the ingest statistics as plain data (for `/api/v2/stats`)."""
        writer = self.writer
        data = self.stats.as_dict()
        data["listening"] = {name: f"{self.settings.server_host}:{port}" for name, port in self.ports.items()}
        data["connections"] = {
            "active": len(self.connections),
            "devices": self.registry.connected_devices,
            "max": self.admission.cap,
            "addresses": len(self.admission.counts.total),
        }
        data["security_events"] = dict(self.security.counts)
        data["queue"] = {
            "records": writer.queued_records,
            "bytes": writer.queued_bytes,
            "frames_in_flight": writer.in_flight,
            "high_water": writer.high_water,
            "low_water": writer.low_water,
            "backpressure": writer.paused,
            "backpressure_episodes": self.stats.backpressure_episodes,
        }
        data["live_events_dropped"] = self._publisher.dropped if self._publisher else 0
        return data
