"""One vehicle's pull: steps 1–6 of the cycle (see `fleet.sync.service`) for a vehicle already leased.

`VehiclePull.run(target)` asks the vehicle, keeps what passes validation, moves the cursors only over what
was stored, and ends in one write of everything with the journal row. It never raises for a vehicle's
failure: a timeout, an error answer, a broken body, a lost lease, even a bug, end as a journal row, and the
cycle goes on with the other vehicles.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries.sync import JournalEntry, VehicleUpdate, stored_channel_ids
from fleet.sync import metrics
from fleet.sync.errors import LeaseLost, NoApiKey, PullError, PullProtocolError
from fleet.sync.models import AlarmInfo, ChannelInfo, Row, VehicleTarget
from fleet.sync.parse import REJECT_REASONS, contract_major, format_time, to_millis
from fleet.sync.puller import VehiclePuller
from fleet.sync.status import ERROR, OFFLINE, ONLINE
from fleet.sync.transport import FleetTransport
from fleet.sync.windows import MIN_ALARM_WINDOW, TRUNCATED_STEP, Window, plan, plan_alarms, split
from fleet.sync.writer import DATABASE_UNAVAILABLE, LEASE_LOST_NOTE, SyncWriter, VehicleWrite

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 2000
# Requests per endpoint in one vehicle's pull. A 72-hour gap at 25 channels × 1 Hz takes about 450 /data
# requests (hourly windows, each cut into 10-minute ones); the budget stops a vehicle that pages through
# tiny answers from holding a worker forever. What is left is pulled next cycle, from the cursor.
MAX_REQUESTS_PER_PULL = 1000
# The contract major version this server implements (docs/DATA_CONTRACT.md §2).
CONTRACT_MAJOR = 1


@dataclass(slots=True)
class VehicleReport:
    """The outcome of one vehicle in one cycle (what the journal row says, plus the name)."""

    vehicle_id: int
    name: str
    status: str  # ok | timeout | error
    rows_written: int = 0
    rows_rejected: int = 0
    window_from: datetime | None = None
    window_to: datetime | None = None
    duration_ms: int = 0
    note: str | None = None


def backoff_delay(failures: int, interval: float, ceiling: float, *, permanent: bool = False) -> float:
    """Seconds until the next attempt: the interval while healthy, doubling per failure after the first."""
    if failures <= 0:
        return interval
    if permanent:  # a wrong API key does not fix itself in seconds
        return max(interval, ceiling)
    return max(interval, min(ceiling, interval * 2 ** (failures - 1)))


def schedule_slack(interval: float) -> timedelta:
    """How much earlier than `interval` a vehicle becomes due again.

    Cycles restart `interval` after the previous one *ended*, so every vehicle of the last cycle is due by
    then; the slack absorbs the timer's jitter so that none of them waits a whole extra cycle.
    """
    return timedelta(seconds=min(1.0, interval / 10))


@dataclass(slots=True)
class _Run:
    """Mutable state of one vehicle's pull."""

    target: VehicleTarget
    now: datetime
    started: float
    renewed: float = 0.0  # perf_counter of the last lease renewal
    cursor: datetime | None = None  # end of the stored data range (the next last_sync_at)
    window_from: datetime | None = None
    alarm_cursor: datetime | None = None
    pending: list[Row] = field(default_factory=list)
    rows_written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    seen: bool = False
    software_version: str | None = None
    channels: list[ChannelInfo] = field(default_factory=list)
    alarms: dict[int, AlarmInfo] = field(default_factory=dict)
    max_width: timedelta | None = None  # the agent's widest window
    oldest_data: datetime | None = None  # the agent's oldest sample
    backoff: bool = True  # False: a failure that waits no longer than the interval


class VehiclePull:
    """The pull of one vehicle (`run`), with the settings, HTTP client, pool and writer the service shares."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        writer: SyncWriter,
        now: Callable[[], datetime],
        client: httpx.AsyncClient,
        pool: FleetTransport | None,
    ) -> None:
        self.db = db
        self.settings = settings
        self._writer = writer
        self._now = now
        self._client = client
        self._pool = pool
        default_key = settings.vehicle_default_api_key
        self._default_key = default_key.get_secret_value() if default_key is not None else None

    async def run(self, target: VehicleTarget) -> VehicleReport:
        """Pull one leased vehicle and store the outcome; never raises (but for cancellation)."""
        started = time.perf_counter()
        run = _Run(target=target, now=to_millis(self._now()), started=started, renewed=started)
        status = "ok"
        error: PullError | None = None
        sync_status: str | None = ONLINE
        try:
            api_key = target.api_key or self._default_key
            if not api_key:
                raise NoApiKey()
            async with VehiclePuller(
                self._client,
                target,
                api_key,
                timeout=self.settings.pull_timeout_sec,
                max_rows=self.settings.sync_max_rows_per_request,
                pool=self._pool,
            ) as puller:
                try:
                    reply = await puller.status()
                except PullError as err:
                    status, error, sync_status = err.journal_status, err, OFFLINE
                else:
                    run.seen = True
                    run.software_version = reply.software_version
                    run.oldest_data = reply.oldest_data
                    if reply.max_window_seconds is not None:
                        run.max_width = timedelta(seconds=reply.max_window_seconds)
                    puller.limit_rows(reply.row_limit)
                    status, sync_status, error = await self._pull_up_vehicle(
                        puller, run, reply.contract_version, reply.db_ok
                    )
        except NoApiKey as err:  # not contacted: its online/offline state is unknown, not changed
            status, error, sync_status = err.journal_status, err, None
        except LeaseLost:
            status = "error"
            run.notes.insert(0, LEASE_LOST_NOTE)
        except DATABASE_UNAVAILABLE as err:  # the cycle's next claim fails and reports it once
            status = "error"
            run.notes.insert(0, f"database unavailable: {err}")
        except Exception as err:  # a bug: journal it, keep the cycle going
            log.exception("vehicle_sync_crashed", vehicle_id=target.id)
            status = "error"
            run.notes.insert(0, f"unexpected {type(err).__name__}: {err}")
        return await self._finish(run, status, sync_status, error)

    async def _pull_up_vehicle(
        self, puller: VehiclePuller, run: _Run, contract: str | None, db_ok: bool | None
    ) -> tuple[str, str, PullError | None]:
        """Steps 2–5 for a vehicle that answered `/status`: the journal status, `sync_status`, the data error.

        A vehicle that answers but cannot be synced — a contract major version this server does not speak,
        or a local database it reports broken — gets `sync_status = 'error'`, and no backoff: it is tried
        again next interval, which keeps `last_seen_at` (and so its online state) current.
        """
        if contract_major(contract) != CONTRACT_MAJOR:
            run.backoff = False
            run.notes.append(
                f"contract_version {contract!r} is not supported (this server implements "
                f"{CONTRACT_MAJOR}.x): data and alarms not pulled"
            )
            return "error", ERROR, None
        known = await self._channels(puller, run)
        if db_ok is False:
            run.backoff = False
            run.notes.append("the vehicle reports its local database failing (db_ok false): data not pulled")
            return "error", ERROR, None
        if known is None:
            # Not fatal (seed 003 step 2, contract §8): store the rows now, learn the channels when /channels
            # answers. Channel ids are then only range-checked.
            run.notes.append("no channel list yet: rows stored without checking their channel ids")
        error: PullError | None = None
        try:
            await self._pull_data(puller, run, known)
        except PullError as err:
            error = err
            run.notes.insert(0, str(err))
        await self._pull_alarms(puller, run)
        return (error.journal_status if error is not None else "ok"), ONLINE, error

    async def _channels(self, puller: VehiclePuller, run: _Run) -> set[int] | None:
        """Step 2; returns the channel ids rows are checked against (None: no list at all, rows unchecked)."""
        try:
            channels, rejected = await puller.channels()
        except PullError as err:
            run.notes.append(f"{err} (using stored channels)")
            async with self.db.system() as conn:
                stored = await stored_channel_ids(conn, run.target.id)
            return stored or None
        run.channels = channels
        if rejected:
            run.notes.append("channels rejected: " + _describe_counts(rejected))
            _count_rejections(rejected)
        return {c.channel_id for c in channels}

    async def _pull_data(self, puller: VehiclePuller, run: _Run, known: set[int] | None) -> None:
        """Steps 3–4: walk the windows in order, moving the cursor only over ranges fully stored."""
        target = run.target
        start = target.last_sync_at or (run.now - timedelta(seconds=self.settings.pull_window_sec))
        oldest = run.oldest_data
        if target.last_sync_at is not None and oldest is not None and target.last_sync_at < oldest <= run.now:
            # The vehicle's retention dropped the start of the gap (contract §8): say so once, go on from what
            # it still holds instead of asking for hours of empty windows.
            run.notes.append(
                f"the vehicle holds nothing before {format_time(oldest)}: "
                f"data since {format_time(target.last_sync_at)} is lost"
            )
            log.warning(
                "vehicle_data_lost",
                vehicle_id=target.id,
                vehicle=target.name,
                lost_from=format_time(target.last_sync_at),
                lost_to=format_time(oldest),
            )
            start = to_millis(oldest)
        run.window_from = run.cursor = start
        queue: deque[Window] = deque(plan(start, run.now, run.max_width))
        requests = 0
        while queue:
            window = queue.popleft()
            if window.start != run.cursor:  # windows must meet exactly: never leave a hole behind
                break
            if requests == MAX_REQUESTS_PER_PULL:
                run.notes.append(f"data: stopped after {requests} requests; the rest follows next cycle")
                break
            requests += 1
            page = await puller.data(window.start, window.end, channels=known, now=run.now)
            run.rejected.update(page.rejected)
            run.pending.extend(page.rows)
            if page.truncated:
                resume = page.next_from
                if resume is None and window.width <= TRUNCATED_STEP:
                    raise PullProtocolError("data", "a truncated answer without 'next_from'")
                rest = resume or window.start
                run.cursor = rest
                if window.width > TRUNCATED_STEP and page.end - rest > TRUNCATED_STEP:
                    queue.extendleft(reversed(split(rest, page.end, TRUNCATED_STEP)))
                else:
                    queue.appendleft(Window(rest, page.end))
            else:
                run.cursor = page.end
                if page.end < window.end:  # the agent has nothing settled beyond this point yet
                    break
            # Commit as the pull goes: bounded memory, and a long pull keeps its lease alive.
            if (
                len(run.pending) >= self.settings.sync_max_rows_per_request
                or time.perf_counter() - run.renewed > self.settings.sync_lease_sec / 3
            ):
                await self._flush_rows(run)

    async def _flush_rows(self, run: _Run) -> None:
        """Store the rows gathered so far with the cursor they complete (long gap fills commit as they go)."""
        rows, run.pending = run.pending, []
        result = await self._writer.write(
            VehicleWrite(
                run.target.id,
                rows=rows,
                channels=run.channels,
                update=VehicleUpdate(
                    run.target.id,
                    last_sync_at=run.cursor,
                    last_seen_at=run.now if run.seen else None,
                    sync_status=ONLINE if run.seen else None,
                    software_version=run.software_version,
                ),
            )
        )
        run.channels = []  # stored; the final write need not repeat them
        run.renewed = time.perf_counter()
        run.rows_written += result.inserted
        if not result.lease_held:
            raise LeaseLost()

    async def _pull_alarms(self, puller: VehiclePuller, run: _Run) -> None:
        """Step 5, on its own cursor; a failure is noted, not fatal."""
        target = run.target
        start = (
            target.alarms_synced_at
            or target.last_sync_at
            or (run.now - timedelta(seconds=self.settings.pull_window_sec))
        )
        cursor = start
        queue: deque[Window] = deque(plan_alarms(start, run.now, run.max_width))
        requests = 0
        try:
            while queue:
                window = queue.popleft()
                if window.start != cursor or requests == MAX_REQUESTS_PER_PULL:
                    break
                requests += 1
                page = await puller.alarms(window.start, window.end, now=run.now)
                run.rejected.update(page.rejected)
                for alarm in page.alarms:
                    run.alarms[alarm.alarm_id] = alarm
                if page.truncated and page.end - window.start > MIN_ALARM_WINDOW:
                    # More alarms than the agent answers at once: ask again in halves (contract §5).
                    middle = to_millis(window.start + (page.end - window.start) / 2)
                    queue.extendleft([Window(middle, page.end), Window(window.start, middle)])
                    continue
                if page.truncated:
                    run.notes.append(f"alarms: more than one answer holds in {format_window(window)}")
                cursor = page.end
                if page.end < window.end:
                    break
        except PullError as err:
            run.notes.append(str(err))
        if cursor > start or target.alarms_synced_at is None:
            # A first pull that failed still pins where alarms begin: falling back to the data cursor next
            # time would skip this range, which the data pull has already moved past.
            run.alarm_cursor = cursor

    async def _finish(
        self, run: _Run, status: str, sync_status: str | None, error: PullError | None
    ) -> VehicleReport:
        """Step 6: store what is left, the bookkeeping and the journal row in one write."""
        target = run.target
        failures = 0 if status == "ok" else target.sync_failures + 1
        interval = self.settings.sync_interval_sec
        delay = backoff_delay(
            failures if run.backoff else 0,
            interval,
            self.settings.sync_backoff_max_sec,
            permanent=error is not None and not error.retryable,
        )
        finished = self._now()
        duration_ms = int((time.perf_counter() - run.started) * 1000)
        rejected_total = sum(run.rejected.values())
        if rejected_total:
            run.notes.append(f"rejected {rejected_total}: " + _describe_counts(run.rejected))
            _count_rejections(run.rejected)
        if error is not None and not run.notes:
            run.notes.append(str(error))
        note = "; ".join(run.notes)[:MAX_ERROR_CHARS] or None
        data_moved = run.cursor is not None and run.window_from is not None and run.cursor > run.window_from
        update = VehicleUpdate(
            target.id,
            last_sync_at=run.cursor if data_moved else None,
            alarms_synced_at=run.alarm_cursor,
            last_seen_at=run.now if run.seen else None,
            sync_status=sync_status,
            software_version=run.software_version,
            finish=True,
            failures=failures,
            next_at=finished + timedelta(seconds=delay) - schedule_slack(interval),
        )
        journal = JournalEntry(
            vehicle_id=target.id,
            started_at=run.now,
            finished_at=finished,
            status=status,
            rows_written=run.rows_written,
            duration_ms=duration_ms,
            window_from=run.window_from,
            window_to=run.cursor,
            error=note,
        )
        write = VehicleWrite(
            target.id,
            rows=run.pending,
            channels=run.channels,
            alarms=list(run.alarms.values()),
            update=update,
            journal=journal,
        )
        report = VehicleReport(
            vehicle_id=target.id,
            name=target.name,
            status=status,
            rows_rejected=rejected_total,
            window_from=run.window_from,
            window_to=run.cursor,
            duration_ms=duration_ms,
            note=note,
        )
        try:
            result = await self._writer.write(write)
        except Exception as err:
            report.status = "error"
            report.note = f"could not store the result: {err}"
            await self._store_failure(run, report, update, journal, err)
        else:
            report.rows_written = run.rows_written + result.inserted
            if not result.lease_held:
                report.status = "error"
                report.note = LEASE_LOST_NOTE
        metrics.VEHICLE_SYNCS.labels(report.status).inc()
        metrics.ROWS_WRITTEN.inc(report.rows_written)
        self._log_transition(target, report, failures, error)
        return report

    async def _store_failure(
        self, run: _Run, report: VehicleReport, update: VehicleUpdate, journal: JournalEntry, err: Exception
    ) -> None:
        """The final write was refused: journal the failure alone, keeping the cursors where they were."""
        failures = run.target.sync_failures + 1
        try:
            await self._writer.write(
                VehicleWrite(
                    run.target.id,
                    update=VehicleUpdate(
                        run.target.id,
                        last_seen_at=update.last_seen_at,
                        sync_status=update.sync_status,
                        finish=True,
                        failures=failures,
                        next_at=update.next_at,
                    ),
                    journal=JournalEntry(
                        vehicle_id=journal.vehicle_id,
                        started_at=journal.started_at,
                        finished_at=journal.finished_at,
                        status="error",
                        rows_written=run.rows_written,
                        duration_ms=journal.duration_ms,
                        window_from=journal.window_from,
                        window_to=journal.window_from,
                        error=report.note,
                    ),
                )
            )
        except DATABASE_UNAVAILABLE:
            log.debug("sync_journal_failed", vehicle_id=run.target.id, error=str(err))
        except Exception as again:
            log.error("sync_journal_failed", vehicle_id=run.target.id, error=str(again), first_error=str(err))

    def _log_transition(
        self, target: VehicleTarget, report: VehicleReport, failures: int, error: PullError | None
    ) -> None:
        """Log once when a vehicle starts failing and once when it recovers; stay quiet in between."""
        if report.status != "ok" and target.sync_failures == 0:
            event = log.error if error is not None and not error.retryable else log.warning
            event(
                "vehicle_sync_failing",
                vehicle_id=target.id,
                vehicle=target.name,
                status=report.status,
                kind=error.kind if error is not None else "error",
                error=report.note,
            )
        elif report.status == "ok" and target.sync_failures > 0:
            log.info(
                "vehicle_sync_recovered",
                vehicle_id=target.id,
                vehicle=target.name,
                failed_cycles=target.sync_failures,
            )
        else:
            log.debug(
                "vehicle_synced",
                vehicle_id=target.id,
                status=report.status,
                rows=report.rows_written,
                failures=failures,
            )


def _describe_counts(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))


def _count_rejections(counts: Counter[str] | dict[str, int]) -> None:
    for reason, count in counts.items():
        metrics.ROWS_REJECTED.labels(reason if reason in REJECT_REASONS else "other").inc(count)


def format_window(window: Window) -> str:
    return f"[{window.start.isoformat()}, {window.end.isoformat()})"
