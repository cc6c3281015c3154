"""The coordinator loop of the `sync` role.

Home Assistant's update-coordinator contract, applied to the whole fleet:

* cadence measured from the **end** of the last cycle: a slow cycle delays the next one instead of piling
  cycles on top of each other;
* errors classified: `retryable` (the database is unreachable: try again next interval) or `unexpected`
  (a bug: logged with its traceback); per-vehicle failures never reach this level — they are journaled;
* logged **once** when cycles start failing and **once** when they recover, not every 30 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from fleet.errors import DatabaseUnavailable
from fleet.sync import metrics
from fleet.sync.service import SyncService

log = structlog.get_logger(__name__)

RETRYABLE = (OSError, TimeoutError, DatabaseUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError)


class SyncScheduler:
    """Run `service.run_cycle()` forever, `interval` seconds after each cycle ends, until `stop()`."""

    def __init__(self, service: SyncService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.failing: str | None = None  # the error class of the current failure streak
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Finish the running cycle's pulls, start no new cycle."""
        self._stop.set()
        self.service.request_stop()

    async def run(self) -> None:
        log.info(
            "sync_started",
            worker=self.service.owner,
            interval_s=self.interval,
            timeout_s=self.service.settings.pull_timeout_sec,
            window_s=self.service.settings.pull_window_sec,
            concurrency=self.service.settings.sync_concurrency,
        )
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    async def run_once(self) -> None:
        """One cycle with the coordinator's error handling; never raises (but for cancellation)."""
        try:
            report = await self.service.run_cycle()
        except RETRYABLE as err:
            self._failed("retryable", err)
            return
        except Exception as err:
            self._failed("unexpected", err)
            return
        metrics.CYCLES.labels("ok").inc()
        if self.failing is not None:
            log.info("sync_cycles_recovered", after=self.failing)
            self.failing = None
        if report.vehicles:
            log.info(
                "sync_cycle_done",
                vehicles=len(report.vehicles),
                ok=report.count("ok"),
                timeout=report.count("timeout"),
                error=report.count("error"),
                rows=report.rows_written,
                duration_s=round(report.duration_s, 3),
                sleeping_s=self.interval,
            )

    def _failed(self, kind: str, err: BaseException) -> None:
        metrics.CYCLES.labels("failed").inc()
        if self.failing is None:
            if kind == "unexpected":
                log.error("sync_cycles_failing", kind=kind, error=str(err), exc_info=err)
            else:
                log.error("sync_cycles_failing", kind=kind, error=str(err))
        self.failing = kind
