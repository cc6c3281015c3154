"""Group commit: many vehicles' results written in few transactions.

A vehicle's pull ends in one `VehicleWrite` (a long gap fill in a few). Writes queue up while a transaction
is running and the next transaction takes them all: one COPY into the staging table, one
`INSERT … ON CONFLICT DO NOTHING`, one statement each for channels, alarms, vehicle bookkeeping and the
journal — whatever the number of vehicles. Under load fifty vehicles share a commit; when idle a single
write goes out at once, so nobody waits for a batch to fill.

Isolation is kept: when a group transaction fails on something one vehicle brought (a value the database
refuses), each write is retried alone, so one vehicle's bad data never loses another's. When the database
itself is unreachable, every write of the group fails at once and its vehicles are journaled next time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
import structlog

from fleet.db import Database
from fleet.db.queries.sync import (
    JournalEntry,
    VehicleUpdate,
    insert_journal,
    insert_measurements,
    insert_pull_positions,
    update_vehicles,
    upsert_alarms,
    upsert_channels,
)
from fleet.errors import DatabaseUnavailable
from fleet.sync import metrics
from fleet.sync.gps import PullPosition
from fleet.sync.models import AlarmInfo, ChannelInfo, Row

log = structlog.get_logger(__name__)

# A group stops growing at this many measurements: big enough to amortise a commit, small enough that the
# staging table stays in memory (temp_buffers) and a failed group is cheap to redo.
MAX_GROUP_ROWS = 100_000
# Transactions in flight at once: one COPYs while the other runs its INSERT.
PARALLEL_GROUPS = 2

LEASE_LOST_NOTE = "another sync worker took the vehicle over (lease expired); the cursor was not moved"

# Errors that say "the database is not there", not "this data is wrong": retrying alone cannot help.
DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


@dataclass(slots=True)
class VehicleWrite:
    """Everything one vehicle wants stored in one go.

    `journal.rows_written` counts rows inserted by earlier writes of the same pull; the writer adds what
    this write inserts before the journal row is stored.
    """

    vehicle_id: int
    rows: list[Row] = field(default_factory=list)
    positions: list[PullPosition] = field(default_factory=list)  # made from GPS channels (fleet.sync.gps)
    channels: list[ChannelInfo] = field(default_factory=list)
    alarms: list[AlarmInfo] = field(default_factory=list)
    update: VehicleUpdate | None = None
    journal: JournalEntry | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows the write inserted (duplicates skipped) and whether our lease on the vehicle still held."""

    inserted: int
    lease_held: bool


@dataclass(slots=True)
class _Pending:
    write: VehicleWrite
    future: asyncio.Future[WriteResult]


class SyncWriter:
    """Queue of `VehicleWrite`s drained by a couple of committing tasks; `write()` returns once committed."""

    def __init__(
        self,
        db: Database,
        *,
        owner: str,
        lease_sec: float,
        now: Callable[[], datetime],
        max_group_rows: int = MAX_GROUP_ROWS,
        parallel: int = PARALLEL_GROUPS,
        on_committed: Callable[[list[VehicleWrite]], None] | None = None,
    ) -> None:
        self._db = db
        self._owner = owner
        self._lease_sec = lease_sec
        self._now = now
        self._max_group_rows = max_group_rows
        self._parallel = parallel
        self._on_committed = on_committed  # the live-bus hook (fleet.sync.publish)
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the committing tasks."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._drain(), name=f"sync-writer-{n}") for n in range(self._parallel)
            ]

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        for pending in self._pending:  # only when the tasks died: nothing may wait forever
            if not pending.future.done():
                pending.future.set_exception(DatabaseUnavailable("the sync writer stopped"))
        self._pending.clear()

    async def write(self, item: VehicleWrite) -> WriteResult:
        """Queue `item` and wait until it is committed (or failed)."""
        if self._closing:
            raise DatabaseUnavailable("the sync writer is closed")
        if not self._tasks:
            self.start()
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, future))
        self._wakeup.set()
        return await future

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        rows = 0
        while self._pending and (
            not group or rows + len(self._pending[0].write.rows) <= self._max_group_rows
        ):
            pending = self._pending.pop(0)
            rows += len(pending.write.rows)
            group.append(pending)
        return group

    async def _drain(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = self._take_group()
            try:
                await self._commit_group(group)
            except asyncio.CancelledError:
                for pending in group:
                    if not pending.future.done():
                        pending.future.cancel()
                raise

    async def _commit_group(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._commit([p.write for p in group])
        except DATABASE_UNAVAILABLE as err:
            metrics.WRITE_BATCHES.labels("failed").inc()
            for pending in group:
                _settle(pending, error=err)
            return
        except (asyncpg.PostgresError, ValueError, TypeError, OverflowError) as err:
            # Something in the group is unacceptable to the database: find out whose it is.
            metrics.WRITE_BATCHES.labels("failed").inc()
            if len(group) == 1:
                log.warning("sync_write_refused", vehicle_id=group[0].write.vehicle_id, error=str(err))
                _settle(group[0], error=err)
                return
            for pending in group:
                await self._commit_group([pending])
            return
        metrics.WRITE_BATCHES.labels("ok").inc()
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        for pending in group:
            _settle(pending, result=results[id(pending.write)])
        if self._on_committed is not None:
            try:
                self._on_committed([p.write for p in group])
            except Exception:  # the bus is best-effort; the data is committed
                log.exception("sync_publish_failed")

    async def _commit(self, writes: list[VehicleWrite]) -> dict[int, WriteResult]:
        """One transaction for all `writes`; keyed by `id(write)` (a vehicle appears at most once)."""
        synced_at = self._now()
        rows = [row for w in writes for row in w.rows] if len(writes) > 1 else writes[0].rows
        given: Counter[int] = Counter()
        for w in writes:
            given[w.vehicle_id] += len(w.rows)
        async with self._db.system() as conn:
            # Losing the last commits in a server crash loses nothing for good: their cursors roll back with
            # their rows, and the next cycle pulls the range again from the vehicle. So the commit need not
            # wait for the WAL flush.
            await conn.execute("SET LOCAL synchronous_commit = off")
            inserted = await insert_measurements(conn, rows, given)
            positions = [p for w in writes for p in w.positions]
            if positions:
                await insert_pull_positions(conn, positions)
            await upsert_channels(conn, [(w.vehicle_id, c) for w in writes for c in w.channels], synced_at)
            await upsert_alarms(conn, [(w.vehicle_id, a) for w in writes for a in w.alarms], synced_at)
            updates = [w.update for w in writes if w.update is not None]
            held = await update_vehicles(conn, owner=self._owner, lease_sec=self._lease_sec, updates=updates)
            journal = [
                _journal_row(
                    w.journal, inserted.get(w.vehicle_id, 0), w.update is None or w.vehicle_id in held
                )
                for w in writes
                if w.journal is not None
            ]
            await insert_journal(conn, journal)
        return {
            id(w): WriteResult(inserted.get(w.vehicle_id, 0), w.update is None or w.vehicle_id in held)
            for w in writes
        }


def _journal_row(entry: JournalEntry, inserted: int, lease_held: bool) -> JournalEntry:
    rows = entry.rows_written + inserted
    if lease_held:
        return replace(entry, rows_written=rows)
    note = "; ".join(filter(None, [LEASE_LOST_NOTE, entry.error]))
    return replace(entry, rows_written=rows, status="error", error=note)


def _settle(
    pending: _Pending, *, result: WriteResult | None = None, error: BaseException | None = None
) -> None:
    if pending.future.done():  # the writer's caller was cancelled meanwhile
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        assert result is not None
        pending.future.set_result(result)
