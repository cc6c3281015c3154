"""Everything a running agent owns: the store, the simulator feed, the pruner, faults and the request log."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from fleet.agent.channels import simulated_channels
from fleet.agent.config import AgentConfig
from fleet.agent.errors import AgentError
from fleet.agent.faults import FaultInjector
from fleet.agent.feed import SIMULATOR_SOURCE, SimulationFeed, prune_forever, prune_once
from fleet.agent.simulator import VehicleSimulator
from fleet.agent.store import AgentStore
from fleet.agent.times import now_ms

log = structlog.get_logger("fleet.agent")

# Bounded, because an agent may run for months: tests read the recent past, nobody needs all of it.
REQUEST_LOG_SIZE = 1000


class ConfigError(AgentError):
    """The configuration cannot run an agent."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the agent answered: what was asked and the status it got."""

    method: str
    path: str
    query: dict[str, str]
    status: int


class AgentRuntime:
    """The resources of one running agent; :meth:`start` opens them, :meth:`stop` releases them in reverse."""

    def __init__(self, config: AgentConfig, store: AgentStore, faults: FaultInjector) -> None:
        self.config = config
        self.store = store
        self.faults = faults
        self.seed: int | None = None
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        # The latest window end served by /data: a row written later with an older time can be missed by a
        # server that already pulled past it, so ingest reports such rows as late.
        self.served_until: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, config: AgentConfig, faults: FaultInjector | None = None) -> AgentRuntime:
        """Open the buffer, write simulated history when asked to, and start the background tasks."""
        if config.api_key is None:
            raise ConfigError("an API key is required (AGENT_API_KEY or OUTBOUND_API_KEY)")
        store = await AgentStore.open(config.db_path)
        runtime = cls(config, store, faults if faults is not None else FaultInjector.from_config(config))
        try:
            if config.simulate:
                await runtime._start_simulator()
            retention_ms = int(config.retention_hours * 3_600_000)
            max_rows = config.retention_rows
            # Once before listening, so an agent restarted after a long pause never serves expired rows.
            await prune_once(store, retention_ms=retention_ms, max_rows=max_rows)
            runtime._spawn(
                prune_forever(
                    store,
                    retention_ms=retention_ms,
                    max_rows=max_rows,
                    interval_s=config.prune_interval_seconds,
                ),
                "agent-prune",
            )
        except BaseException:
            await runtime.stop()
            raise
        return runtime

    async def stop(self) -> None:
        """Cancel the background tasks, wait for them, and close the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.store.close()

    async def _start_simulator(self) -> None:
        config = self.config
        channels = simulated_channels(config.channels)
        await self.store.upsert_channels(channels)
        self.seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
        now = now_ms()
        # Whole seconds make readable times; the tick grid starts where the history should begin.
        start = (now - config.backfill_seconds * 1000) // 1000 * 1000
        simulator = VehicleSimulator(channels, seed=self.seed, start_ms=start, rate_hz=config.rate_hz)
        # Conditions of a previous run are forgotten, so its open alarms would otherwise stay open forever.
        await self.store.resolve_open_alarms(SIMULATOR_SOURCE, now)
        _, newest = await self.store.data_span()
        if newest is not None:
            simulator.skip_to(newest + 1)
        feed = SimulationFeed(self.store, simulator)
        written = await feed.backfill(now)
        log.info(
            "agent.simulator_started",
            seed=self.seed,
            channels=len(channels),
            rate_hz=config.rate_hz,
            backfilled_rows=written,
        )
        self._spawn(feed.run_live(), "agent-simulator")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent.task_crashed", task=task.get_name(), error=repr(task.exception()))
