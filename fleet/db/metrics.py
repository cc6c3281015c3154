"""Database metrics: every query's duration and outcome, the pool's occupancy and the wait for a connection.

Seed 004's names for queries (`database_queries_total`, `database_query_duration_seconds`); the rest under
`fleet_db_*`. Labels are bounded: the statement's leading keyword (`select`, `insert`, ... or `other`) and,
for errors, the exception class (a fixed set in asyncpg). Queries are observed with asyncpg's query logger,
attached to every pooled connection in the pool's `init` hook, so no call site has to remember anything.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import asyncpg
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

QUERIES = Counter(
    "database_queries_total", "Statements sent to PostgreSQL, by leading keyword", ["operation"]
)
QUERY_DURATION = Histogram(
    "database_query_duration_seconds",
    "Time of one statement (round trip included), by leading keyword",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUERY_ERRORS = Counter(
    "fleet_db_query_errors_total",
    "Statements that failed, by leading keyword and error class",
    ["operation", "kind"],
)
POOL_ACQUIRE = Histogram(
    "fleet_db_pool_acquire_seconds",
    "Wait for a pooled connection (a growing tail means the pool is too small or queries too slow)",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10),
)

OPERATIONS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "copy",
        "with",
        "begin",
        "commit",
        "rollback",
        "savepoint",
        "release",
    }
)


@functools.lru_cache(maxsize=1024)
def operation(query: str) -> str:
    """The statement's leading keyword when it is a known one, else `other` (bounded label values)."""
    head = query.lstrip(" \t\r\n(").split(None, 1)
    word = head[0].rstrip(";").lower() if head else ""
    return word if word in OPERATIONS else "other"


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connection"
    return "other"


@functools.lru_cache(maxsize=len(OPERATIONS) + 1)
def _query_children(op: str) -> tuple[Any, Any]:
    """The counter and histogram children of `op` (`labels()` costs more than the update itself)."""
    return QUERIES.labels(op), QUERY_DURATION.labels(op)


def record_query(record: Any) -> None:
    """asyncpg query logger: one observation per statement (called soon after it ends)."""
    op = operation(record.query) if isinstance(record.query, str) else "other"
    count, duration = _query_children(op)
    count.inc()
    duration.observe(record.elapsed)
    exc = record.exception
    if exc is not None and not isinstance(exc, asyncio.CancelledError):
        QUERY_ERRORS.labels(op, error_kind(exc)).inc()


class _PoolCollector(Collector):
    """Occupancy of every open pool of this process, read at scrape time."""

    def __init__(self) -> None:
        self.pools: set[asyncpg.Pool] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = idle = limit = 0
        for pool in list(self.pools):
            if pool.is_closing():
                continue
            size += pool.get_size()
            idle += pool.get_idle_size()
            limit += pool.get_max_size()
        connections = GaugeMetricFamily(
            "fleet_db_pool_connections", "Pooled connections to PostgreSQL, by state", labels=["state"]
        )
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily("fleet_db_pool_max_connections", "Pool size limit (DB_POOL_MAX)", value=limit)


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pool(pool: asyncpg.Pool) -> None:
    """Export a pool's occupancy (until `forget_pool`)."""
    _POOLS.pools.add(pool)


def forget_pool(pool: asyncpg.Pool) -> None:
    _POOLS.pools.discard(pool)
