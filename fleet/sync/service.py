"""One sync cycle, exactly as seed 003 describes it, made safe for thousands of vehicles and several workers.

For every due vehicle (leased in the database, so two workers never pull the same one at once; at most
`SYNC_CONCURRENCY` at a time, under a semaphore):

1. `GET /status` → `last_seen_at`, `sync_status`, `software_version`. A timeout is journaled `timeout`, any
   other failure `error`, and the vehicle is skipped.
2. `GET /channels` → `channel_config` (phys_min/max → min_value/max_value). A failure is not fatal: the
   channels stored earlier are used to check the data.
3. Window: `from = last_sync_at ?? now − PULL_WINDOW_SEC`, `to = now`.
4. `GET /data` → measurements (`ON CONFLICT DO NOTHING`), 1-hour windows after a gap of more than 24 hours,
   10-minute windows after a truncated answer (`fleet.sync.windows`). `last_sync_at` moves only to the end
   of what was stored: a failed window is asked for again next cycle. The end is the agent's answered `to`,
   which it holds back a moment behind its clock so that no row can still arrive inside a pulled window.
5. `GET /alarms` → `alarms_log` (a known alarm only gains `resolved_at`). Not fatal; its own cursor
   (`alarms_synced_at`) makes a failed range be asked for again.
6. One `sync_journal` row: status, rows written, duration, the window, and a note of anything rejected.

Entries that break the contract are dropped and counted (`fleet.sync.parse`); the rest is kept. A vehicle that
keeps failing is tried less often (`sync_failures`, `sync_next_at`), and the change is logged once when it
starts failing and once when it recovers. Time comes from the injectable `now` callable.

This module owns the cycle: leases, the semaphore, the shared HTTP client and the writer. One vehicle's pull
(steps 1–6) is `fleet.sync.vehicle.VehiclePull`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import httpx
import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.sync import (
    claim_vehicles,
    count_without_address,
    release_leases,
    renew_lease,
)
from fleet.sync import metrics
from fleet.sync.models import VehicleTarget
from fleet.sync.puller import open_client
from fleet.sync.transport import FleetTransport
from fleet.sync.vehicle import VehiclePull, VehicleReport
from fleet.sync.writer import DATABASE_UNAVAILABLE, SyncWriter

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock (aware, UTC)."""
    return datetime.now(UTC)


def worker_name() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class CycleReport:
    """The outcome of one cycle."""

    started_at: datetime
    finished_at: datetime | None = None
    duration_s: float = 0.0
    vehicles: list[VehicleReport] = field(default_factory=list)
    without_address: int = 0

    @property
    def rows_written(self) -> int:
        return sum(v.rows_written for v in self.vehicles)

    def count(self, status: str) -> int:
        return sum(1 for v in self.vehicles if v.status == status)


class SyncService:
    """Runs sync cycles; use as `async with SyncService(db, settings) as service: await service.run_cycle()`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        now: Clock = utc_now,
        owner: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.owner = owner or worker_name()
        self._now = now
        self._own_client = client is None
        self._client = client
        self._pool: FleetTransport | None = None
        self._writer = SyncWriter(db, owner=self.owner, lease_sec=settings.sync_lease_sec, now=now)
        self._pull: VehiclePull | None = None
        self._stopping = False

    async def __aenter__(self) -> SyncService:
        if self._client is None:
            self._client, self._pool = open_client(
                self.settings.sync_concurrency, self.settings.pull_timeout_sec
            )
        self._writer.start()
        self._pull = VehiclePull(self.db, self.settings, self._writer, self._now, self._client, self._pool)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit queued writes, give back leases still held, close the HTTP pool."""
        await self._writer.close()
        try:
            async with self.db.system() as conn:
                await release_leases(conn, self.owner)
        except Exception as err:  # best effort: leases expire on their own anyway
            log.warning("sync_lease_release_failed", error=str(err))
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def apply_settings(self, settings: Settings) -> None:
        """Use reloaded settings from the next pull on (interval, timeouts, windows, backoff)."""
        self.settings = settings
        if self._pull is not None:
            self._pull.settings = settings

    def request_stop(self) -> None:
        """Claim no more vehicles; pulls already running finish."""
        self._stopping = True

    async def run_cycle(self, *, force: bool = False, only: Sequence[int] | None = None) -> CycleReport:
        """Pull every due vehicle once.

        `force` pulls every vehicle, ignoring backoff and schedule (never a lease); `only` limits the cycle
        to the given vehicle ids.
        """
        report = CycleReport(started_at=self._now())
        started = time.perf_counter()
        if only is None:
            async with self.db.system() as conn:
                report.without_address = await count_without_address(conn)
        concurrency = self.settings.sync_concurrency
        slots = asyncio.Semaphore(concurrency)
        claim_error: BaseException | None = None
        after_id = 0
        async with asyncio.TaskGroup() as tasks:
            while not self._stopping:
                try:
                    async with self.db.system() as conn:
                        claimed = await claim_vehicles(
                            conn,
                            owner=self.owner,
                            after_id=after_id,
                            limit=concurrency,
                            now=self._now(),
                            force=force,
                            lease_sec=self.settings.sync_lease_sec,
                            only=only,
                        )
                except Exception as err:  # let the pulls in flight finish, then report the failure
                    claim_error = err
                    break
                if not claimed:
                    break
                after_id = claimed[-1]["id"]
                claimed_at = time.perf_counter()
                for record in claimed:
                    await slots.acquire()
                    tasks.create_task(self._pull_in_slot(_target(record), claimed_at, slots, report))
        report.finished_at = self._now()
        report.duration_s = time.perf_counter() - started
        metrics.CYCLE_DURATION.observe(report.duration_s)
        metrics.LAST_CYCLE_END.set(time.time())
        metrics.LAST_CYCLE_FAILED.set(sum(1 for v in report.vehicles if v.status != "ok"))
        if claim_error is not None:
            raise claim_error
        return report

    async def _pull_in_slot(
        self, target: VehicleTarget, claimed_at: float, slots: asyncio.Semaphore, report: CycleReport
    ) -> None:
        try:
            # A vehicle claimed in a batch may wait for a slot while slow pulls run; past half its lease, make
            # sure the claim still holds, so that two workers never pull it at the same time.
            if time.perf_counter() - claimed_at > self.settings.sync_lease_sec / 2:
                async with self.db.system() as conn:
                    held = await renew_lease(
                        conn, owner=self.owner, vehicle_id=target.id, lease_sec=self.settings.sync_lease_sec
                    )
                if not held:
                    log.info("vehicle_lease_expired_before_pull", vehicle_id=target.id)
                    return
            report.vehicles.append(await self.sync_vehicle(target))
        except DATABASE_UNAVAILABLE as err:  # the renewal failed; the cycle's next claim reports it
            log.debug("vehicle_lease_renewal_failed", vehicle_id=target.id, error=str(err))
        finally:
            slots.release()

    async def sync_vehicle(self, target: VehicleTarget) -> VehicleReport:
        """Pull one leased vehicle and store the outcome (see `fleet.sync.vehicle`)."""
        assert self._pull is not None, "use the service as an async context manager"
        return await self._pull.run(target)


def _target(record: object) -> VehicleTarget:
    row = dict(record)  # type: ignore[call-overload]
    return VehicleTarget(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        port=row["api_port"],
        api_key=row["api_key"],
        last_sync_at=row["last_sync_at"],
        alarms_synced_at=row["alarms_synced_at"],
        sync_failures=row["sync_failures"],
    )
