"""The file-descriptor budget: device sockets must never take the descriptors the rest of the process needs.

Every device connection is a descriptor, and so is every API client, WebSocket viewer, database and Redis
connection, log file and backup file of the same process. If device sockets could use the whole
``RLIMIT_NOFILE``, a flood of bare TCP connections to the device port would make ``accept()`` fail for the
API too (``/health`` included) and the database pool could not reconnect. So at start the soft limit is
raised to the hard limit, a reserve is kept for everything else, and device connections are capped below
what is left (``INGEST_MAX_CONNECTIONS`` if that is lower). The effective cap is logged at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

try:  # pragma: no cover - not on every platform
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]

MIN_RESERVE = 256
RESERVE_FRACTION = 4  # by default a quarter of the limit stays for non-device descriptors
UNLIMITED = 1 << 20  # what an "unlimited" limit is taken for (Linux refuses more than nr_open anyway)


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    """What the device listeners may use: ``cap`` connections, out of ``limit`` descriptors."""

    limit: int  # RLIMIT_NOFILE (soft) after raising it
    hard_limit: int
    raised_from: int  # the soft limit before
    open_at_start: int  # descriptors already open when the budget was computed
    reserve: int  # kept for the API, the database pools, Redis and files
    configured: int  # INGEST_MAX_CONNECTIONS
    cap: int  # device connections admitted at once

    @property
    def lowered(self) -> bool:
        """True when the descriptor limit, not INGEST_MAX_CONNECTIONS, sets the cap."""
        return self.cap < self.configured


def raise_nofile_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft before, soft now, hard)."""
    if resource is None:  # pragma: no cover
        return UNLIMITED, UNLIMITED, UNLIMITED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # An "unlimited" hard limit is capped by the kernel (nr_open): settle for a large finite value.
            target = UNLIMITED if hard == resource.RLIM_INFINITY else soft
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                target = soft
        soft = target
    return _finite(before), _finite(soft), _finite(hard)


def _finite(value: int) -> int:
    if resource is not None and value == resource.RLIM_INFINITY:
        return UNLIMITED
    return int(value)


def open_descriptors() -> int:
    """How many descriptors this process has open now (0 when the platform cannot tell)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return 0


def default_reserve(limit: int) -> int:
    """The reserve when INGEST_FD_RESERVE is unset: a quarter of the limit, at least MIN_RESERVE."""
    return max(MIN_RESERVE, limit // RESERVE_FRACTION)


def compute_budget(
    configured: int, reserve: int | None, *, limit: int, hard_limit: int, raised_from: int, open_now: int
) -> DescriptorBudget:
    """The device-connection cap for a descriptor limit; ``cap`` is 0 when nothing is left for devices."""
    kept = default_reserve(limit) if reserve is None else reserve
    cap = max(0, min(configured, limit - open_now - kept))
    return DescriptorBudget(limit, hard_limit, raised_from, open_now, kept, configured, cap)


def descriptor_budget(configured: int, reserve: int | None) -> DescriptorBudget:
    """Raise the limit and compute this process's device-connection cap."""
    before, limit, hard = raise_nofile_limit()
    return compute_budget(
        configured, reserve, limit=limit, hard_limit=hard, raised_from=before, open_now=open_descriptors()
    )
