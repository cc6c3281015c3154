"""The periodic-job helper: survives every exception, logs an episode once, exports its state."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from fleet.ops.jobs import JobRegistry, PeriodicJob


async def until(predicate: object, within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def sample(name: str, job: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"job": job, **labels})


class Flaky:
    """Fails with the given exceptions in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_a_job_that_raises_keeps_running_and_logs_the_episode_once() -> None:
    action = Flaky(RuntimeError("bug"), KeyError("x"), ValueError("still a bug"))
    reports: list[str] = []
    job = PeriodicJob("t-flaky", action, interval=0.01, on_success=reports.append)
    with capture_logs() as logs:
        task = asyncio.create_task(job.run())
        await until(lambda: action.calls >= 6)
        job.stop()
        await asyncio.wait_for(task, 5)
    events = [e["event"] for e in logs]
    assert events.count("job_failing") == 1
    assert events.count("job_recovered") == 1
    failing = next(e for e in logs if e["event"] == "job_failing")
    assert failing["kind"] == "unexpected" and "bug" in failing["error"] and failing["exc_info"]
    recovered = next(e for e in logs if e["event"] == "job_recovered")
    assert recovered["failed_runs"] == 3
    assert reports and set(reports) == {"done"}
    assert job.status.failing_since is None and job.status.runs_failed == 3
    assert sample("fleet_job_runs_total", "t-flaky", result="error") == 3
    assert (sample("fleet_job_runs_total", "t-flaky", result="ok") or 0) >= 3
    assert sample("fleet_job_failing", "t-flaky") == 0
    assert sample("fleet_job_last_success_timestamp_seconds", "t-flaky")
    assert sample("fleet_job_last_failure_timestamp_seconds", "t-flaky")


async def test_retryable_errors_log_without_traceback_and_a_new_episode_logs_again() -> None:
    job = PeriodicJob("t-retry", Flaky(ConnectionRefusedError("db down")), interval=1)
    with capture_logs() as logs:
        assert not await job.run_once()
        assert job.status.error_kind == "retryable"
        assert await job.run_once()
        job._action = Flaky(asyncpg.PostgresConnectionError("gone"))  # a second outage
        assert not await job.run_once()
    failing = [e for e in logs if e["event"] == "job_failing"]
    assert len(failing) == 2 and all("exc_info" not in e for e in failing)
    assert sample("fleet_job_failing", "t-retry") == 1


async def test_tolerance_decides_when_a_job_is_overdue() -> None:
    now = [1000.0]
    job = PeriodicJob(
        "t-tol", Flaky(OSError("x"), OSError("y")), interval=10, tolerance=30, clock=lambda: now[0]
    )
    registry = JobRegistry()
    registry.add(job)
    await job.run_once()
    assert job.status.as_dict(now[0])["state"] == "failing"
    now[0] += 31
    await job.run_once()
    assert [j.name for j in registry.overdue(now[0])] == ["t-tol"]
    assert job.status.as_dict(now[0])["state"] == "failed"
    await job.run_once()
    assert registry.overdue(now[0]) == []


async def test_a_run_that_hangs_times_out_and_the_next_run_starts_after_the_interval() -> None:
    started: list[float] = []
    loop = asyncio.get_running_loop()

    async def slow() -> None:
        started.append(loop.time())
        if len(started) == 1:
            await asyncio.sleep(10)

    job = PeriodicJob("t-timeout", slow, interval=0.05, timeout=0.1)
    task = asyncio.create_task(job.run())
    await until(lambda: len(started) >= 2)
    job.stop()
    await asyncio.wait_for(task, 5)
    assert job.status.runs_failed == 1 and job.status.runs_ok >= 1
    assert sample("fleet_job_runs_total", "t-timeout", result="error") == 1
    # The second run started one interval after the first ended (timeout 0.1 + interval 0.05).
    assert started[1] - started[0] >= 0.14


async def test_wake_runs_early_and_cancellation_ends_the_job() -> None:
    action = Flaky()
    job = PeriodicJob("t-wake", action, interval=3600)
    task = asyncio.create_task(job.run())
    await until(lambda: action.calls >= 1)
    job.wake()
    await until(lambda: action.calls >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
