"""One periodic-job helper for every background loop (maintenance, mail, sync, backups, config watch).

The contract (Home Assistant's update coordinator, arq's poll loop):

* the next run starts `interval` seconds after the previous one **ended** — a slow run delays the next one
  instead of piling runs on top of each other; `wake()` starts one early;
* errors are classified: *retryable* (the database or the network is away: try again next interval) or
  *unexpected* (a bug: logged with its traceback); the job survives both, and any other exception too —
  only cancellation ends it;
* a failure is logged **once per episode** (`job_failing`), the recovery once (`job_recovered`), every
  other failed run only at DEBUG;
* the outcome is exported (`fleet_job_*` metrics) and kept in `JobStatus`, which `/ready` reads to name a
  job that has been failing for longer than its tolerance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from fleet.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

JOB_LAST_SUCCESS = Gauge(
    "fleet_job_last_success_timestamp_seconds", "End of the last successful run of a background job", ["job"]
)
JOB_LAST_FAILURE = Gauge(
    "fleet_job_last_failure_timestamp_seconds", "End of the last failed run of a background job", ["job"]
)
JOB_RUNS = Counter(
    "fleet_job_runs_total", "Runs of background jobs, by result (ok, error)", ["job", "result"]
)
JOB_FAILING = Gauge("fleet_job_failing", "1 while a background job's runs fail, else 0", ["job"])

# Failures that say "a dependency is away", not "the code is wrong": no traceback, retried next interval.
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

Interval = float | Callable[[], float]
ErrorKind = Literal["retryable", "unexpected"]


@dataclass(slots=True)
class JobStatus:
    """What is known about a job's runs (times are Unix seconds)."""

    name: str
    tolerance: float  # seconds of continuous failure before /ready names the job
    last_success: float | None = None
    last_failure: float | None = None
    failing_since: float | None = None  # start of the current failure episode
    failures_in_episode: int = 0
    last_error: str | None = None
    error_kind: ErrorKind | None = None
    running_since: float | None = None
    runs_ok: int = 0
    runs_failed: int = 0

    def overdue(self, now: float) -> bool:
        """True when the job has been failing for longer than its tolerance."""
        return self.failing_since is not None and now - self.failing_since > self.tolerance

    def as_dict(self, now: float) -> dict[str, Any]:
        state = "ok"
        if self.failing_since is not None:
            state = "failed" if self.overdue(now) else "failing"
        elif self.last_success is None:
            state = "running" if self.running_since is not None else "pending"
        return {
            "state": state,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
            "failing_since": _iso(self.failing_since),
            "failures": self.failures_in_episode,
            "error": self.last_error,
            "tolerance_s": self.tolerance,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class PeriodicJob:
    """Run `action()` forever: at start (unless told not to), then `interval` after each run ends."""

    def __init__(
        self,
        name: str,
        action: Callable[[], Awaitable[Any]],
        *,
        interval: Interval,
        tolerance: float | None = None,
        timeout: float | None = None,
        run_at_start: bool = True,
        retryable: tuple[type[BaseException], ...] = RETRYABLE,
        on_success: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._action = action
        self._interval = interval
        self._timeout = timeout
        self._run_at_start = run_at_start
        self._retryable = retryable
        self._on_success = on_success
        self._clock = clock
        # Default tolerance: three missed intervals (at least a minute), so one hiccup never shows in /ready.
        self.status = JobStatus(name, tolerance if tolerance is not None else max(60.0, 3 * self.interval))
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        JOB_FAILING.labels(name).set(0)

    @property
    def interval(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    def wake(self) -> None:
        """Start the next run now (or right after the one in progress)."""
        self._wake.set()

    def stop(self) -> None:
        """Let the run in progress finish and start no other."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """The loop; returns after `stop()`, or raises CancelledError when cancelled."""
        first = True
        while not self._stop.is_set():
            if not first or self._run_at_start:
                self._wake.clear()
                await self.run_once()
            first = False
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, self.interval))

    async def run_once(self) -> bool:
        """One run with the contract's error handling; True when it succeeded. Never raises but for
        cancellation."""
        status = self.status
        status.running_since = self._clock()
        try:
            if self._timeout is not None:
                async with asyncio.timeout(self._timeout):
                    result = await self._action()
            else:
                result = await self._action()
        except self._retryable as err:
            self._failed("retryable", err)
            return False
        except Exception as err:
            self._failed("unexpected", err)
            return False
        finally:
            status.running_since = None
        self._succeeded()
        if self._on_success is not None:
            try:
                self._on_success(result)
            except Exception:  # reporting must not turn a good run into a dead job
                log.exception("job_report_failed", job=self.name)
        return True

    def _succeeded(self) -> None:
        status = self.status
        now = self._clock()
        if status.failing_since is not None:
            log.info(
                "job_recovered",
                job=self.name,
                failed_for_s=round(now - status.failing_since, 1),
                failed_runs=status.failures_in_episode,
            )
        status.last_success = now
        status.failing_since = None
        status.failures_in_episode = 0
        status.last_error = None
        status.error_kind = None
        status.runs_ok += 1
        JOB_RUNS.labels(self.name, "ok").inc()
        JOB_LAST_SUCCESS.labels(self.name).set(now)
        JOB_FAILING.labels(self.name).set(0)

    def _failed(self, kind: ErrorKind, err: BaseException) -> None:
        status = self.status
        now = self._clock()
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if status.failing_since is None:
            status.failing_since = now
            if kind == "unexpected":
                log.error("job_failing", job=self.name, kind=kind, error=message, exc_info=err)
            else:
                log.error("job_failing", job=self.name, kind=kind, error=message)
        else:
            log.debug("job_still_failing", job=self.name, kind=kind, error=message)
        status.last_failure = now
        status.failures_in_episode += 1
        status.last_error = message[:500]
        status.error_kind = kind
        status.runs_failed += 1
        JOB_RUNS.labels(self.name, "error").inc()
        JOB_LAST_FAILURE.labels(self.name).set(now)
        JOB_FAILING.labels(self.name).set(1)


class JobRegistry:
    """The jobs of one process, by name (what `/ready` reports)."""

    def __init__(self) -> None:
        self._jobs: dict[str, PeriodicJob] = {}

    def add(self, job: PeriodicJob) -> PeriodicJob:
        self._jobs[job.name] = job
        return job

    def remove(self, job: PeriodicJob) -> None:
        if self._jobs.get(job.name) is job:
            del self._jobs[job.name]

    def __iter__(self) -> Iterator[PeriodicJob]:
        return iter(list(self._jobs.values()))

    def get(self, name: str) -> PeriodicJob | None:
        return self._jobs.get(name)

    def overdue(self, now: float | None = None) -> list[PeriodicJob]:
        """Jobs failing for longer than their tolerance."""
        now = time.time() if now is None else now
        return [job for job in self if job.status.overdue(now)]
