"""The group-commit writer shared by every connection: many frames, one transaction, then the ACKs.

Connections hand over one :class:`Pending` per received frame (its rows, its raw bytes, the ACK it is
waiting for). Workers take whatever accumulated - waiting at most ``ingest_batch_window_ms`` after the
oldest item, or less once ``ingest_batch_max_records`` are queued - and write it in one transaction
(``fleet.db.queries.ingest.store_batch``). Only after the COMMIT returns are the items marked committed
and their connections told to send ACKs; a connection sends its ACKs strictly in arrival order, so two
workers committing out of order cannot reorder them.

Failures: an error that says nothing about the rows (connection lost, timeout, lock, the server
restarting) is retried with exponential backoff, the same batch, until it commits - the devices wait
meanwhile, and they retransmit anyway. An error caused by the data itself (a value PostgreSQL refuses)
would fail every retry, so the batch is split in halves until the offending frame is isolated; that frame
gets no ACK and its raw bytes are kept with outcome ``error``. Nothing is acknowledged before it is stored.

Backpressure: the queue is measured in records and bytes; crossing the high-water mark calls
``on_pressure(True)`` (the listener pauses every socket), falling below the low-water mark calls
``on_pressure(False)``. Memory is bounded by the marks plus at most one read per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, cast

import asyncpg
import structlog

from fleet.db.queries.ingest import (
    BatchOutcome,
    DeviceStateUpdate,
    DeviceSummary,
    apply_device_updates,
    ensure_partition,
    partition_name,
    store_batch,
    store_batch_direct,
)
from fleet.errors import DatabaseUnavailable
from fleet.ingest.stats import BACKPRESSURE_ACTIVE, QUEUE_BYTES, QUEUE_RECORDS, IngestStats
from fleet.protocol.rows import CanRow, EventRow, PositionRow, RawFrameRow

if TYPE_CHECKING:
    from fleet.db import Database
    from fleet.protocol.base import RowSource, Telemetry

log = structlog.get_logger(__name__)

WAITING, COMMITTED, FAILED = 0, 1, 2
# Frame bytes queued before reading pauses regardless of the record count (a stream of large frames with
# few records each must not grow memory unnoticed), and the level at which it resumes.
QUEUE_HIGH_WATER_BYTES = 64 * 1024 * 1024
QUEUE_LOW_WATER_BYTES = 16 * 1024 * 1024
# Concurrent batches: while one commits (PostgreSQL busy, Python idle) the next is encoded and copied.
WRITER_CONCURRENCY = 2
# Records turned into rows between two yields to the event loop: row building runs in the writer task,
# and other connections (and the other writer's database round trips) must not wait long behind it.
ROWS_PER_SLICE = 500
# A queue at least this long when a worker takes a batch is split with the idle workers (see _take).
SPLIT_MIN_RECORDS = 1000
RETRY_MIN_SEC = 0.1
DEVICE_UPDATE_INTERVAL_SEC = 0.2
RETRY_MAX_SEC = 5.0
# Months outside this window are not given partitions on the fly (their rows land in the default
# partition, where maintenance re-homes them): a device with a broken clock must not create tables.
PARTITION_PAST = timedelta(days=800)
PARTITION_FUTURE = timedelta(days=62)
SECONDS_PER_DAY = 86_400
# After a direct COPY met a retransmitted record, batches take the staging path (which skips duplicates) for a
# while: retransmissions come in waves (devices reconnecting after an outage resend what was not acknowledged).
DIRECT_PAUSE_AFTER_DUPLICATE_SEC = 5.0
# After PostgreSQL refused the direct COPY itself (a partition dropped or not open to the writer), longer.
DIRECT_PAUSE_AFTER_REFUSAL_SEC = 60.0
_DEVICE_TIME = operator.attrgetter("device_time")
_CAN_TIME = operator.attrgetter("time")
_CAN_RECORD = operator.attrgetter("record_index")


def _single_month(times: list[float]) -> tuple[int, int] | None:
    """The one UTC month all these epoch seconds fall in, or None (min and max run as C loops: a batch's times
    are mostly in one month)."""
    try:
        low, high = min(times), max(times)
    except TypeError:  # a mix of datetimes and numbers
        return None
    first = datetime.fromtimestamp(int(low // SECONDS_PER_DAY) * SECONDS_PER_DAY, UTC)
    last = datetime.fromtimestamp(int(high // SECONDS_PER_DAY) * SECONDS_PER_DAY, UTC)
    return (first.year, first.month) if (first.year, first.month) == (last.year, last.month) else None


def months_of(times: Iterable[float | datetime]) -> set[tuple[int, int]]:
    """Return the UTC (year, month) pairs of epoch seconds or datetimes (deduplicated by day first)."""
    if not isinstance(times, list | tuple):
        times = list(times)
    if times and not isinstance(times[0], datetime):
        month = _single_month(cast("list[float]", times))
        if month is not None:
            return {month}
    days = set()
    months = set()
    for value in times:
        if isinstance(value, datetime):
            months.add((value.year, value.month))
        else:
            days.add(int(value // SECONDS_PER_DAY))
    for day in days:
        moment = datetime.fromtimestamp(day * SECONDS_PER_DAY, UTC)
        months.add((moment.year, moment.month))
    return months


class AckSink(Protocol):
    """What the writer needs from a connection: a nudge to send the ACKs that became sendable."""

    def flush_outbox(self) -> None: ...


class Pending:
    """One frame on its way to the database (and, for telemetry, an ACK waiting for the commit).

    Telemetry arrives decoded but without rows (``telemetry``, ``device_id``, ``received_at`` and the
    protocol's row source ``rows``): the writer builds them when it takes the batch, so that socket
    callbacks stay short (see ``_materialize``).
    """

    __slots__ = (
        "ack",
        "can",
        "conn",
        "device_id",
        "device_update",
        "enqueued",
        "events",
        "nbytes",
        "positions",
        "raw",
        "received",
        "received_at",
        "records",
        "rows",
        "state",
        "telemetry",
    )

    def __init__(
        self,
        conn: AckSink | None,
        ack: bytes | None,
        received: float,
        positions: list[PositionRow] | None = None,
        can: list[CanRow] | None = None,
        events: list[EventRow] | None = None,
        raw: RawFrameRow | None = None,
        device_update: DeviceStateUpdate | None = None,
        records: int = 0,
        nbytes: int = 0,
        telemetry: Telemetry | None = None,
        device_id: int | None = None,
        received_at: datetime | None = None,
        rows: RowSource | None = None,
    ) -> None:
        self.conn = conn
        self.telemetry = telemetry
        self.rows = rows
        self.device_id = device_id
        self.received_at = received_at
        self.ack = ack
        self.received = received  # loop time of reception, for the ACK latency
        self.enqueued = received
        self.positions = positions or []
        self.can = can or []
        self.events = events or []
        self.raw = raw
        self.device_update = device_update
        self.records = records
        self.nbytes = nbytes
        self.state = WAITING


def _weight(item: Pending) -> int:
    """Queue weight in records: a frame without records still costs one slot."""
    return item.records or 1


def _is_data_error(err: BaseException) -> bool:
    """True when the rows themselves caused the failure (retrying the same rows cannot succeed)."""
    if isinstance(err, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return True
    # Anything else but a transient database or network condition (a value the COPY encoder refuses, or
    # a bug) would also fail every retry.
    transient = asyncpg.PostgresError | OSError | asyncpg.InterfaceError | TimeoutError | DatabaseUnavailable
    return not isinstance(err, transient)


class PartitionCache:
    """Months known to have partitions, per table, so fleet_ensure_partition runs once per new month."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: set[tuple[str, int, int]] = set()
        self._exists: set[tuple[str, int, int]] = set()  # months seen to have a partition of their own

    def exists(self, table: str, year: int, month: int) -> bool:
        """True when ``table`` has a partition of its own for that month (not the default partition)."""
        return (table, year, month) in self._exists

    def forget(self) -> None:
        """Check every month again (a partition was found missing: retention may have dropped it)."""
        self._known.clear()
        self._exists.clear()

    async def ensure(self, wanted: set[tuple[str, int, int]]) -> None:
        missing = wanted - self._known
        if not missing:
            return
        now = datetime.now(UTC)
        for table, year, month in sorted(missing):
            start = datetime(year, month, 1, tzinfo=UTC)
            if not now - PARTITION_PAST <= start <= now + PARTITION_FUTURE:
                self._known.add((table, year, month))  # default partition; maintenance decides later
                continue
            try:
                async with self._db.system() as conn:
                    created = await ensure_partition(conn, table, start)
            except (
                asyncpg.PostgresError,
                OSError,
                asyncpg.InterfaceError,
                TimeoutError,
                DatabaseUnavailable,
            ) as err:
                # Not fatal: rows of that month go to the default partition. Try again next batch.
                log.warning(
                    "ingest_partition_failed", table=table, month=f"{year}-{month:02d}", error=str(err)
                )
                continue
            if created:
                log.info("ingest_partition_created", table=table, month=f"{year}-{month:02d}")
            self._known.add((table, year, month))
            self._exists.add((table, year, month))


class DeviceStateWriter:
    """Writes what connections learn about devices (connection, last seen, negotiation) - apart from batches.

    Inside the batch transactions these UPDATEs made two concurrent batches lock the same device rows in
    different orders: PostgreSQL resolved each such deadlock after its one-second ``deadlock_timeout``, a
    latency spike for every device of both batches. Here one task merges the updates per device and writes
    them every ``DEVICE_UPDATE_INTERVAL_SEC`` in a short transaction of its own, in device-id order; batches
    only read ``devices``. On failure the updates are kept (merged with newer ones) and retried.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[int, DeviceStateUpdate] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def add(self, update: DeviceStateUpdate) -> None:
        known = self._pending.get(update.device_id)
        self._pending[update.device_id] = update if known is None else known.merge(update)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-device-state")

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush(), grace)

    async def _run(self) -> None:
        delay = DEVICE_UPDATE_INTERVAL_SEC
        while True:
            await self._wake.wait()
            await asyncio.sleep(delay)
            self._wake.clear()
            delay = DEVICE_UPDATE_INTERVAL_SEC if await self._flush() else min(delay * 2, RETRY_MAX_SEC)

    async def _flush(self) -> bool:
        """Write the pending updates; False (and keep them) when the database refused."""
        if not self._pending:
            return True
        updates, self._pending = self._pending, {}
        try:
            async with self._db.system() as conn:
                await apply_device_updates(conn, [updates[key] for key in sorted(updates)])
        except (
            asyncpg.PostgresError,
            OSError,
            asyncpg.InterfaceError,
            TimeoutError,
            DatabaseUnavailable,
        ) as err:
            if not self._failing:
                log.warning("ingest_device_state_failed", devices=len(updates), error=str(err))
                self._failing = True
            for update in updates.values():  # older first, so newer values win the merge
                known = self._pending.get(update.device_id)
                self._pending[update.device_id] = update if known is None else update.merge(known)
            self._wake.set()
            return False
        self._failing = False
        return True


class BatchWriter:
    """Collects :class:`Pending` items from all connections and commits them in batches."""

    def __init__(
        self,
        db: Database,
        stats: IngestStats,
        *,
        window_ms: float,
        max_records: int,
        high_water: int,
        low_water: int,
        on_pressure: Callable[[bool], None] | None = None,
        on_committed: Callable[[list[DeviceSummary]], None] | None = None,
        on_events: Callable[[list[Pending]], None] | None = None,
        concurrency: int = WRITER_CONCURRENCY,
        high_water_bytes: int = QUEUE_HIGH_WATER_BYTES,
        low_water_bytes: int = QUEUE_LOW_WATER_BYTES,
        direct: bool = True,
    ) -> None:
        self._db = db
        self._direct = direct  # INGEST_DIRECT_COPY
        self._stats = stats
        # Backends (server PIDs) whose session has the staging tables: saves a statement per batch.
        self._staged_backends: set[int] = set()
        self.window = window_ms / 1000
        self.max_records = max_records
        self.high_water = high_water
        self.low_water = min(low_water, high_water)
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = min(low_water_bytes, high_water_bytes)
        self._on_pressure = on_pressure
        self._on_committed = on_committed
        self._on_events = on_events  # committed frames that carried tracker events (the live bus hook)
        self._concurrency = concurrency
        self._queue: deque[Pending] = deque()
        self._unbuilt: deque[Pending] = deque()  # queued telemetry whose rows are not built yet
        self._device_updates = DeviceStateWriter(db)
        self._build_wake = asyncio.Event()
        self._builder: asyncio.Task[None] | None = None
        self.queued_records = 0
        self.queued_bytes = 0
        self.in_flight = 0  # items taken by workers, not yet committed or failed
        self._committing = 0  # workers writing a batch
        self.paused = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._give_up_at: float | None = None
        self._partitions = PartitionCache(db)
        self._direct_after = 0.0  # loop time before which batches take the staging path (see _direct_plan)
        self._failing_since: float | None = None
        self._loop = asyncio.get_running_loop()

    # --- intake ------------------------------------------------------------------------------------------
    def submit(self, item: Pending) -> None:
        """Queue one frame's work (called from connection callbacks; never blocks)."""
        was_empty = not self._queue
        item.enqueued = self._loop.time()
        self._queue.append(item)
        if item.device_update is not None:
            self._device_updates.add(item.device_update)
        if item.telemetry is not None:
            self._unbuilt.append(item)
            self._build_wake.set()
        before = self.queued_records
        self.queued_records += _weight(item)
        self.queued_bytes += item.nbytes
        self._idle.clear()
        if was_empty or (before < self.max_records <= self.queued_records):
            self._wake.set()
        if not self.paused and (
            self.queued_records >= self.high_water or self.queued_bytes >= self.high_water_bytes
        ):
            self._set_paused(True)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        BACKPRESSURE_ACTIVE.set(1 if paused else 0)
        if self._on_pressure is not None:
            self._on_pressure(paused)

    def _take(self) -> list[Pending]:
        queue = self._queue
        batch: list[Pending] = []
        records = 0
        limit = self.max_records
        idle = self._concurrency - self._committing - 1  # other workers free to take a batch now
        if idle > 0 and self.queued_records >= SPLIT_MIN_RECORDS:
            # A backlog (after a slow commit, or a burst) is shared with the idle workers: their
            # transactions run on other PostgreSQL backends at the same time instead of one after the other.
            limit = min(limit, -(-self.queued_records // (idle + 1)))
        while queue and (not batch or records + _weight(queue[0]) <= limit):
            item = queue.popleft()
            batch.append(item)
            records += _weight(item)
            self.queued_bytes -= item.nbytes
        self.queued_records -= records
        self.in_flight += len(batch)
        if (
            self.paused
            and self.queued_records <= self.low_water
            and self.queued_bytes <= self.low_water_bytes
        ):
            self._set_paused(False)
        return batch

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        for number in range(self._concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"ingest-writer-{number}"))
        self._builder = asyncio.create_task(self._build(), name="ingest-row-builder")
        self._device_updates.start()

    async def _build(self) -> None:
        """Turn queued telemetry into rows ahead of the writers, in slices, whenever the loop has time.

        Without it a writer would build its batch's rows and only then talk to PostgreSQL, so the
        server's CPU and the database would take turns instead of working at the same time. A writer that
        takes items the builder has not reached yet builds them itself (``_materialize``).
        """
        unbuilt = self._unbuilt
        while True:
            if not unbuilt:
                self._build_wake.clear()
                await self._build_wake.wait()
                continue
            built = 0
            while unbuilt and built < ROWS_PER_SLICE:
                item = unbuilt.popleft()
                built += self._build_one(item)
            await asyncio.sleep(0)

    async def stop(self, grace: float = 10.0) -> None:
        """Commit what is queued (giving up after ``grace`` seconds), then stop the workers."""
        self._stopping = True
        self._give_up_at = self._loop.time() + grace
        self._wake.set()
        if self._builder is not None:
            self._builder.cancel()
            await asyncio.gather(self._builder, return_exceptions=True)
            self._builder = None
        if self._workers:
            _done, pending = await asyncio.wait(self._workers, timeout=grace + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
        await self._device_updates.stop(max(self._give_up_at - self._loop.time(), 1.0))
        left = len(self._queue)
        if left:
            log.warning("ingest_writer_stopped_with_queue", frames=left, records=self.queued_records)
            for item in self._queue:
                item.state = FAILED
            self._queue.clear()
            self.queued_records = self.queued_bytes = 0

    async def wait_idle(self, within: float | None = None) -> bool:
        """Wait until nothing is queued or in flight; False when that takes longer than ``within`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    # --- workers --------------------------------------------------------------------------------------------------
    async def _work(self) -> None:
        loop = self._loop
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._stopping and self.queued_records < self.max_records:
                delay = self._queue[0].enqueued + self.window - loop.time()
                if delay > 0:
                    # Group commit: let the batch fill until the oldest item has waited one window,
                    # unless max_records arrive first (submit() wakes us then). A timer sets the event:
                    # wait_for would wrap the wait in a task of its own, twice per batch and worker.
                    self._wake.clear()
                    timer = loop.call_later(delay, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                    continue
            batch = self._take()
            QUEUE_RECORDS.set(self.queued_records)
            QUEUE_BYTES.set(self.queued_bytes)
            if not batch:
                continue
            if self._queue:
                self._wake.set()  # an idle worker looks at what is left now (a split backlog: takes it)
            self._committing += 1
            try:
                await self._commit(batch)
            finally:
                self._committing -= 1
                self.in_flight -= len(batch)
                if not self._queue and not self.in_flight:
                    self._idle.set()

    async def _commit(self, batch: list[Pending]) -> None:
        delay = RETRY_MIN_SEC
        loop = self._loop
        while True:
            started = loop.time()
            try:
                outcome = await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # classified below; the listener must never see it
                if _is_data_error(err):
                    self._stats.batch_failure("data")
                    await self._isolate(batch, err)
                    return
                self._stats.batch_failure("retryable")
                if self._failing_since is None:
                    self._failing_since = started
                    log.error(
                        "ingest_batch_failed",
                        error=str(err) or type(err).__name__,
                        error_type=type(err).__name__,
                        frames=len(batch),
                        retry_in_s=delay,
                    )
                if self._give_up_at is not None and loop.time() + delay > self._give_up_at:
                    log.error("ingest_batch_abandoned_at_shutdown", frames=len(batch))
                    for item in batch:
                        item.state = FAILED
                    self._notify(batch)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SEC)
                continue
            if self._failing_since is not None:
                log.info("ingest_batch_recovered", failed_for_s=round(started - self._failing_since, 3))
                self._failing_since = None
            self._committed(batch, outcome, loop.time() - started)
            return

    async def _isolate(self, batch: list[Pending], err: BaseException) -> None:
        """Split a batch the database refused until the frame that causes it is alone, then drop that one."""
        if len(batch) > 1:
            middle = len(batch) // 2
            await self._commit(batch[:middle])
            await self._commit(batch[middle:])
            return
        item = batch[0]
        raw = item.raw
        log.error(
            "ingest_frame_unstorable",
            error=str(err) or type(err).__name__,
            error_type=type(err).__name__,
            excerpt=raw.data[:32].hex() if raw is not None else None,
        )
        item.state = FAILED
        self._notify(batch)
        if raw is not None:
            # Keep the evidence: the frame itself, with what went wrong.
            evidence = raw._replace(outcome="error", error=f"store failed: {type(err).__name__}: {err}"[:500])
            try:
                async with self._db.system() as conn:
                    await store_batch(conn, positions=(), raw_frames=[evidence])
            except Exception as second:  # the evidence is best effort, the frame is already unacknowledged
                log.warning("ingest_raw_evidence_failed", error=str(second))

    async def _materialize(self, batch: list[Pending]) -> None:
        """Build the rows the builder task has not built yet, yielding every ``ROWS_PER_SLICE`` records."""
        since_yield = 0
        for item in batch:
            since_yield += self._build_one(item)
            if since_yield >= ROWS_PER_SLICE:
                since_yield = 0
                await asyncio.sleep(0)

    def _build_one(self, item: Pending) -> int:
        """Build one item's rows (once); return how many records that was."""
        telemetry = item.telemetry
        if telemetry is None:
            return 0
        item.telemetry = None
        assert item.device_id is not None and item.received_at is not None and item.rows is not None
        try:
            rows = item.rows.telemetry(item.device_id, telemetry, item.received_at)
        except Exception as err:  # a record the row builder cannot handle: keep it, do not ACK it
            log.exception("ingest_rows_failed", frame_type=str(telemetry.kind), device_id=item.device_id)
            self._stats.decode_error("rows_failed")
            item.state = FAILED
            if item.raw is not None:
                item.raw = item.raw._replace(outcome="error", error=f"{type(err).__name__}: {err}"[:500])
            return 1
        item.positions, item.can, item.events = rows.positions, rows.can, rows.events
        return rows.records

    async def _write(self, batch: list[Pending]) -> BatchOutcome:
        await self._materialize(batch)
        positions = list(itertools.chain.from_iterable(item.positions for item in batch))
        can = list(itertools.chain.from_iterable(item.can for item in batch))
        events = list(itertools.chain.from_iterable(item.events for item in batch))
        raw = [item.raw for item in batch if item.raw is not None]
        months = {
            "positions": months_of(list(map(_DEVICE_TIME, positions))),
            "can_data": months_of(list(map(_CAN_TIME, can))),
            "raw_frames": months_of(row.received_at for row in raw),
        }
        await self._partitions.ensure({(table, *month) for table, found in months.items() for month in found})
        plan = self._direct_plan(positions, can, events, months)
        outcome = None
        if plan is not None:
            outcome = await self._write_direct(positions, raw, can, plan)
        if outcome is None:
            outcome = await self._write_staged(positions, raw, can, events)
            self._stats.batch_path("staging")
        else:
            self._stats.batch_path("direct")
        stats = self._stats
        stats.stored("positions", outcome.positions_stored)
        stats.duplicate(len(positions) - outcome.positions_stored)
        stats.stored("raw_frames", len(raw))
        stats.stored("events", len(events))
        stats.stored("can_data", len(can))
        return outcome

    def _direct_plan(
        self,
        positions: list[PositionRow],
        can: list[CanRow],
        events: list[EventRow],
        months: dict[str, set[tuple[int, int]]],
    ) -> dict[str, str] | None:
        """The partition of each table when the batch can be COPYed straight into them, else None.

        That takes the writer's own connections (`Database.writer()`), positions of one month, CAN readings
        that all belong to records, no events, a partition of its own for each table's month, and no recent
        refusal (``_direct_after``).
        """
        if not (self._direct and positions and self._db.has_writer_pool) or events:
            return None
        if self._loop.time() < self._direct_after:
            return None
        if can and None in map(_CAN_RECORD, can):
            return None
        plan = {}
        for table, found in months.items():
            if len(found) > 1:
                return None
            for year, month in found:
                if not self._partitions.exists(table, year, month):
                    return None
                plan[table] = partition_name(table, year, month)
        return plan

    async def _write_direct(
        self, positions: list[PositionRow], raw: list[RawFrameRow], can: list[CanRow], plan: dict[str, str]
    ) -> BatchOutcome | None:
        """Write the batch by COPY into its partitions; None when PostgreSQL refused it for the staging path."""
        try:
            async with self._db.writer() as conn:
                return await store_batch_direct(
                    conn, positions=positions, raw_frames=raw, can=can, partitions=plan
                )
        except asyncpg.UniqueViolationError:
            # A retransmitted record (or the same record twice in one batch): nothing was stored, and the
            # staging path skips what is already there.
            reason, pause = "duplicate", DIRECT_PAUSE_AFTER_DUPLICATE_SEC
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            # A value PostgreSQL refuses: the staging path finds the frame that carries it (_isolate).
            reason, pause = "data", 0.0
        except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError) as err:
            reason, pause = "refused", DIRECT_PAUSE_AFTER_REFUSAL_SEC
            self._partitions.forget()
            log.warning("ingest_direct_copy_refused", error=str(err), retry_in_s=pause)
        self._stats.direct_fallback(reason)
        self._direct_after = self._loop.time() + pause
        return None

    async def _write_staged(
        self, positions: list[PositionRow], raw: list[RawFrameRow], can: list[CanRow], events: list[EventRow]
    ) -> BatchOutcome:
        backend = -1
        try:
            async with self._db.writer() as conn:
                backend = conn.get_server_pid()
                outcome = await store_batch(
                    conn,
                    positions=positions,
                    raw_frames=raw,
                    can=can,
                    events=events,
                    staging_ready=backend in self._staged_backends,
                )
        except BaseException:
            self._staged_backends.discard(backend)
            raise
        # Only a committed CREATE TEMP TABLE lasts: remember the backend after the commit.
        self._staged_backends.add(backend)
        return outcome

    def _committed(self, batch: list[Pending], outcome: BatchOutcome, seconds: float) -> None:
        for item in batch:
            if item.state == WAITING:
                item.state = COMMITTED
        self._stats.batch(sum(item.records for item in batch), seconds)
        self._notify(batch)
        if self._on_committed is not None and outcome.summaries:
            self._on_committed(outcome.summaries)
        if self._on_events is not None:
            with_events = [item for item in batch if item.events and item.state == COMMITTED]
            if with_events:
                self._on_events(with_events)

    @staticmethod
    def _notify(batch: list[Pending]) -> None:
        seen: set[int] = set()
        for item in batch:
            conn = item.conn
            if conn is not None and id(conn) not in seen:
                seen.add(id(conn))
                conn.flush_outbox()
