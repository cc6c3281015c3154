"""Fault injection: make chosen endpoints fail, stall or truncate, for tests of the server's sync service.

One :class:`FaultInjector` belongs to each running agent. Its baseline comes from the ``fault_*`` settings of
:class:`~fleet.agent.config.AgentConfig`; while the agent runs, a test switches faults on and off::

    faults.set(FaultMode.ERROR, times=1)            # the next /data request fails with HTTP 500
    faults.set(FaultMode.SLOW, delay_seconds=15)    # every /data request waits 15 s (past a 10 s timeout)
    faults.set(FaultMode.TRUNCATE, row_limit=500)   # /data pages stop after 500 rows, truncated=true
    faults.set(FaultMode.ERROR, endpoints={FaultEndpoint.STATUS}, status=503)
    faults.clear()

Each ``set`` starts from the baseline, so an option given to one call never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from fleet.agent.config import AgentConfig, FaultEndpoint, FaultMode


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Which fault, where, and its parameters."""

    mode: FaultMode = FaultMode.NONE
    endpoints: frozenset[FaultEndpoint] = field(default_factory=lambda: frozenset({FaultEndpoint.DATA}))
    delay_seconds: float = 5.0  # SLOW: the wait before answering
    status: int = 500  # ERROR: the HTTP status of the answer
    row_limit: int = 100  # TRUNCATE: the page size /data and /alarms are cut to

    @classmethod
    def from_config(cls, config: AgentConfig) -> FaultSettings:
        """Read the ``fault_*`` settings of a config."""
        return cls(
            mode=config.fault_mode,
            endpoints=frozenset(config.fault_endpoints),
            delay_seconds=config.fault_delay_seconds,
            status=config.fault_status,
            row_limit=config.fault_row_limit,
        )


class FaultInjector:
    """The fault an agent shows now, and for how many more requests."""

    def __init__(self, baseline: FaultSettings | None = None) -> None:
        self._baseline = baseline if baseline is not None else FaultSettings()
        self.settings = self._baseline
        # None: until cleared; a number: the fault hits that many more requests, then clears itself.
        self.remaining: int | None = None
        # How many requests a fault has hit so far, for assertions in tests.
        self.hits = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> FaultInjector:
        """Build the injector a config asks for."""
        return cls(FaultSettings.from_config(config))

    @property
    def mode(self) -> FaultMode:
        """The fault in force."""
        return self.settings.mode

    def set(
        self,
        mode: FaultMode,
        *,
        endpoints: Iterable[FaultEndpoint] | None = None,
        delay_seconds: float | None = None,
        status: int | None = None,
        row_limit: int | None = None,
        times: int | None = None,
    ) -> None:
        """Switch to ``mode``; options not given take the baseline's value; ``times=None`` lasts until cleared."""
        if status is not None and not 400 <= status <= 599:
            raise ValueError("a fault status must be an HTTP error status (400-599)")
        if row_limit is not None and row_limit < 1:
            raise ValueError("a fault row limit must be at least 1")
        if delay_seconds is not None and delay_seconds < 0:
            raise ValueError("a fault delay must not be negative")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        given = {
            "endpoints": frozenset(FaultEndpoint(e) for e in endpoints) if endpoints is not None else None,
            "delay_seconds": delay_seconds,
            "status": status,
            "row_limit": row_limit,
        }
        overrides = {name: value for name, value in given.items() if value is not None}
        self.settings = replace(self._baseline, mode=FaultMode(mode), **overrides)  # type: ignore[arg-type]
        self.remaining = times

    def clear(self) -> None:
        """Stop injecting faults (the baseline's options stay, its mode does not)."""
        self.settings = replace(self._baseline, mode=FaultMode.NONE)
        self.remaining = None

    def take(self, endpoint: FaultEndpoint) -> FaultSettings | None:
        """Return the fault for one request to ``endpoint`` (None when there is none), counting it."""
        settings = self.settings
        if settings.mode is FaultMode.NONE or endpoint not in settings.endpoints:
            return None
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        return settings
