"""The coordinator loop of the `sync` role, on the shared periodic-job helper (`fleet.ops.jobs`).

Home Assistant's update-coordinator contract, applied to the whole fleet:

* cadence measured from the **end** of the last cycle: a slow cycle delays the next one instead of piling
  cycles on top of each other (`SYNC_INTERVAL_SEC`, read at each wait, so a reload applies at once);
* errors classified: `retryable` (the database is unreachable: try again next interval) or `unexpected`
  (a bug: logged with its traceback); per-vehicle failures never reach this level — they are journaled;
* logged **once** when cycles start failing and **once** when they recover, not every 30 seconds; exported
  as the `sync` job (`fleet_job_*`, `/ready`).
"""

from __future__ import annotations

import structlog

from fleet.ops.jobs import PeriodicJob
from fleet.sync import metrics
from fleet.sync.service import CycleReport, SyncService

log = structlog.get_logger(__name__)


class SyncScheduler:
    """Run `service.run_cycle()` forever, the sync interval after each cycle ends, until `stop()`."""

    def __init__(self, service: SyncService, interval: float | None = None) -> None:
        self.service = service
        self._fixed_interval = interval
        self.job = PeriodicJob(
            "sync",
            self._cycle,
            interval=self._interval,
            on_success=self._report,
        )

    def _interval(self) -> float:
        return (
            self._fixed_interval
            if self._fixed_interval is not None
            else self.service.settings.sync_interval_sec
        )

    async def _cycle(self) -> CycleReport:
        try:
            return await self.service.run_cycle()
        except Exception:
            metrics.CYCLES.labels("failed").inc()
            raise

    def stop(self) -> None:
        """Finish the running cycle's pulls, start no new cycle."""
        self.job.stop()
        self.service.request_stop()

    async def run(self) -> None:
        settings = self.service.settings
        log.info(
            "sync_started",
            worker=self.service.owner,
            interval_s=self._interval(),
            timeout_s=settings.pull_timeout_sec,
            window_s=settings.pull_window_sec,
            concurrency=settings.sync_concurrency,
        )
        await self.job.run()

    async def run_once(self) -> bool:
        """One cycle with the coordinator's error handling; never raises (but for cancellation)."""
        return await self.job.run_once()

    def _report(self, report: CycleReport) -> None:
        metrics.CYCLES.labels("ok").inc()
        if report.vehicles:
            log.info(
                "sync_cycle_done",
                vehicles=len(report.vehicles),
                ok=report.count("ok"),
                timeout=report.count("timeout"),
                error=report.count("error"),
                rows=report.rows_written,
                duration_s=round(report.duration_s, 3),
                sleeping_s=self._interval(),
            )
