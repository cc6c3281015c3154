"""Background work of a running agent: the simulator feed (backfill, then live) and ring-buffer pruning."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from fleet.agent.errors import StoreUnavailable
from fleet.agent.simulator import VehicleSimulator
from fleet.agent.store import WRITE_BATCH_ROWS, AgentStore, Alarm, Sample
from fleet.agent.times import now_ms

log = structlog.get_logger("fleet.agent")

SIMULATOR_SOURCE = "simulator"

# After a stall longer than this (a suspended laptop, a blocked disk) the live feed leaves a gap instead of
# inventing the missed minutes, as a logger that was switched off would.
MAX_CATCH_UP_MS = 10_000


class SimulationFeed:
    """Write a simulator's ticks into the store: history up to now, then one tick at a time as time passes."""

    def __init__(
        self, store: AgentStore, simulator: VehicleSimulator, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self._store = store
        self._sim = simulator
        self._clock = clock
        self._failing = False

    async def backfill(self, until_ms: int) -> int:
        """Write every tick before ``until_ms`` in batches; return the number of samples written."""
        samples: list[Sample] = []
        alarms: list[Alarm] = []
        written = 0
        while self._sim.next_time_ms < until_ms:
            tick = self._sim.step()
            samples.extend(tick.samples)
            alarms.extend(tick.alarms)
            if len(samples) >= WRITE_BATCH_ROWS:
                written += await self._write(samples, alarms)
                samples, alarms = [], []
        if samples or alarms:
            written += await self._write(samples, alarms)
        return written

    async def run_live(self) -> None:
        """Produce ticks as their times arrive, until cancelled."""
        while True:
            now = self._clock()
            if now - self._sim.next_time_ms > MAX_CATCH_UP_MS:
                log.warning("agent.simulator_gap", missed_ms=now - self._sim.next_time_ms)
                self._sim.skip_to(now)
            samples: list[Sample] = []
            alarms: list[Alarm] = []
            while self._sim.next_time_ms <= now:
                tick = self._sim.step()
                samples.extend(tick.samples)
                alarms.extend(tick.alarms)
            if samples:
                await self._write_live(samples, alarms)
            await asyncio.sleep(max(0.0, (self._sim.next_time_ms - self._clock()) / 1000))

    async def _write_live(self, samples: list[Sample], alarms: list[Alarm]) -> None:
        # A failing disk must not kill the feed: log once when writes start failing, once when they recover.
        try:
            await self._write(samples, alarms)
        except StoreUnavailable as err:
            if not self._failing:
                log.error("agent.write_failed", error=str(err))
            self._failing = True
            return
        if self._failing:
            log.info("agent.write_recovered")
        self._failing = False

    async def _write(self, samples: list[Sample], alarms: list[Alarm]) -> int:
        result = await self._store.append_rows(samples)
        if alarms:
            await self._store.upsert_alarms(alarms, changed_at=None, source=SIMULATOR_SOURCE)
        return result.written


async def prune_forever(
    store: AgentStore,
    *,
    retention_ms: int,
    max_rows: int,
    interval_s: float,
    clock: Callable[[], int] = now_ms,
) -> None:
    """Apply the ring buffer's retention every ``interval_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await prune_once(store, retention_ms=retention_ms, max_rows=max_rows, clock=clock)


async def prune_once(
    store: AgentStore, *, retention_ms: int, max_rows: int, clock: Callable[[], int] = now_ms
) -> None:
    """Apply the ring buffer's retention now; a database failure is logged, not raised."""
    try:
        deleted = await store.prune(older_than=clock() - retention_ms, max_rows=max_rows)
    except StoreUnavailable as err:
        log.error("agent.prune_failed", error=str(err))
    else:
        if deleted:
            log.info("agent.pruned", rows=deleted, remaining=store.row_count)
