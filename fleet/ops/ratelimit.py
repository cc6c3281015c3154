"""Rate limits (the `limits` library): Redis-backed when REDIS_URL is set, in-process otherwise.

Each limit is a named scope (`login`, `register`, `refresh`, `api`, `auth_failure`) with its own rate; callers hit it
with a key (a client address, a user, an API key). A moving window is used so that "5 per minute"
means at most five in any sixty seconds, not ten across a window boundary.

When Redis fails the limiter lets requests through and logs it: an outage of an optional cache must not
lock every user out, and /ready reports Redis as down meanwhile.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from prometheus_client import Counter

from fleet.config import Settings

log = structlog.get_logger(__name__)

RATE_LIMITED = Counter("fleet_rate_limited_total", "Requests refused by a rate limit", ["scope"])
RATE_LIMIT_ERRORS = Counter(
    "fleet_rate_limit_errors_total", "Rate-limit checks that failed (storage down) and let requests through"
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # seconds until a retry can succeed (when refused)


def limits_from_settings(settings: Settings) -> dict[str, str]:
    """Scope name → rate string, from the RATE_LIMIT_* settings."""
    return {
        "login": f"{settings.rate_limit_login_per_minute}/minute",
        "register": f"{settings.rate_limit_register_per_hour}/hour",
        "refresh": f"{settings.rate_limit_refresh_per_minute}/minute",
        "api": f"{settings.rate_limit_api_per_minute}/minute",
        "auth_failure": f"{settings.rate_limit_auth_failures_per_minute}/minute",
    }


def redis_storage_uri(redis_url: str) -> str:
    """`redis://…` → the async URI `limits` expects (`async+redis://…`)."""
    return redis_url if redis_url.startswith("async+") else f"async+{redis_url}"


class ThrottledMemoryStorage(MemoryStorage):
    """`limits`' in-process storage, pruning expired entries at most once a second.

    The stock storage starts a pruning task (which hops to a worker thread per key) on nearly every hit;
    under load that costs more than the request being limited. Pruning only reclaims memory — window
    counts are computed from timestamps on each hit — so doing it once a second changes no decision.
    (The override targets the parent's private scheduler; should `limits` rename it, the stock behaviour
    simply applies again.)
    """

    PRUNE_INTERVAL_SEC = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._last_prune = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self.PRUNE_INTERVAL_SEC:
            return
        self._last_prune = now
        await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


class RateLimiter:
    """Named moving-window limits over one storage (Redis, or `ThrottledMemoryStorage` in process)."""

    def __init__(self, rates: dict[str, str], storage: Storage) -> None:
        self.items: dict[str, RateLimitItem] = {name: parse(rate) for name, rate in rates.items()}
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        if settings.redis_url:
            storage = storage_from_string(
                redis_storage_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=settings.rate_limit_key_prefix,
            )
            return cls(limits_from_settings(settings), storage)  # type: ignore[arg-type]
        return cls(limits_from_settings(settings), ThrottledMemoryStorage())

    def apply_settings(self, settings: Settings) -> None:
        """Take new rates (hot reload): the dict is swapped in one assignment; counters are kept."""
        self.items = {name: parse(rate) for name, rate in limits_from_settings(settings).items()}

    @property
    def backend(self) -> str:
        return "memory" if isinstance(self.storage, MemoryStorage) else "redis"

    async def hit(self, scope: str, key: str) -> Decision:
        """Count one request of `key` against `scope`; refuse it when the limit is reached."""
        item = self.items[scope]
        try:
            if await self._limiter.hit(item, scope, key):
                return Decision(True)
            stats = await self._limiter.get_window_stats(item, scope, key)
        except Exception as err:  # storage errors must not turn into 500s for every request
            RATE_LIMIT_ERRORS.inc()
            log.warning("rate_limit_storage_error", scope=scope, error=str(err))
            return Decision(True)
        RATE_LIMITED.labels(scope).inc()
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(False, retry)

    async def reset(self) -> None:
        """Forget every counter (used between tests and by operators after an incident)."""
        await self.storage.reset()

    async def close(self) -> None:
        """Close the Redis connections (the in-process storage holds none)."""
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


class LocalBlocks:
    """Keys refused until a moment, remembered in this process (bounded; the oldest entries go first).

    When a limit refuses a key, the caller may note it here so that the key's next requests are refused
    without a storage round trip or any work until the window has room again.
    """

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def block(self, key: str, seconds: int) -> None:
        self._until.pop(key, None)
        self._until[key] = time.monotonic() + seconds
        while len(self._until) > self.MAX_KEYS:
            del self._until[next(iter(self._until))]

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again (0: not blocked)."""
        until = self._until.get(key)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key]
            return 0
        return max(1, math.ceil(left))
