"""Fault injection: make chosen endpoints fail, stall or truncate, for tests of the server's sync service.

One :class:`FaultInjector` belongs to each running agent. It starts from the ``fault_*`` settings of
:class:`~fleet.agent.config.AgentConfig` and can be changed while the agent runs::

    faults.set(FaultMode.ERROR, times=1)            # the next /data request fails with HTTP 500
    faults.set(FaultMode.SLOW, delay_seconds=15)    # every /data request waits 15 s (past a 10 s timeout)
    faults.set(FaultMode.TRUNCATE, row_limit=500)   # /data pages stop after 500 rows, truncated=true
    faults.set(FaultMode.ERROR, endpoints={FaultEndpoint.STATUS}, status=503)
    faults.clear()
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet.agent.config import AgentConfig, FaultEndpoint, FaultMode


@dataclass(slots=True)
class FaultInjector:
    """The fault an agent shows now, which endpoints it hits, and for how many more requests."""

    mode: FaultMode = FaultMode.NONE
    endpoints: frozenset[FaultEndpoint] = field(default_factory=lambda: frozenset({FaultEndpoint.DATA}))
    delay_seconds: float = 5.0
    status: int = 500
    row_limit: int = 100
    # None: until cleared; a number: the fault hits that many more requests, then clears itself.
    remaining: int | None = None
    # How many requests the fault has hit so far, for assertions in tests.
    hits: int = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> FaultInjector:
        """Build the injector a config asks for."""
        return cls(
            mode=config.fault_mode,
            endpoints=frozenset(config.fault_endpoints),
            delay_seconds=config.fault_delay_seconds,
            status=config.fault_status,
            row_limit=config.fault_row_limit,
        )

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
        """Switch to ``mode``; options left None keep their value; ``times=None`` lasts until cleared."""
        if status is not None and not 400 <= status <= 599:
            raise ValueError("a fault status must be an HTTP error status (400-599)")
        if row_limit is not None and row_limit < 1:
            raise ValueError("a fault row limit must be at least 1")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        self.mode = FaultMode(mode)
        if endpoints is not None:
            self.endpoints = frozenset(FaultEndpoint(e) for e in endpoints)
        if delay_seconds is not None:
            self.delay_seconds = max(0.0, delay_seconds)
        if status is not None:
            self.status = status
        if row_limit is not None:
            self.row_limit = row_limit
        self.remaining = times

    def clear(self) -> None:
        """Stop injecting faults."""
        self.mode = FaultMode.NONE
        self.remaining = None

    def take(self, endpoint: FaultEndpoint) -> FaultMode:
        """Return the fault for one request to ``endpoint``, counting it against ``remaining``."""
        if self.mode is FaultMode.NONE or endpoint not in self.endpoints:
            return FaultMode.NONE
        mode = self.mode
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        return mode
