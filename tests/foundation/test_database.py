"""The tenant transaction: committed on success, rolled back on error, context never leaks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from fleet.db import Database, Tenant
from fleet.db.database import FairAcquire, _begin_statement


async def test_error_inside_rolls_back_and_connection_is_reused(
    db: Database, owner_conn: asyncpg.Connection
) -> None:
    name = f"rollback-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        async with db.system() as conn:
            await conn.execute("INSERT INTO vehicles (name) VALUES ($1)", name)
            raise RuntimeError("boom")
    assert await owner_conn.fetchval("SELECT count(*) FROM vehicles WHERE name = $1", name) == 0
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.system() as conn:
            await conn.execute("INSERT INTO users (email) VALUES ($1), ($1)", f"{name}@x.y")
    # The pool's connections are clean afterwards: no open transaction, no context.
    for _ in range(4):
        async with db.tenant(Tenant.anonymous()) as conn:
            assert await conn.fetchval("SELECT current_setting('app.user_role', true)") == ""


async def test_commit_on_success_and_savepoints_inside(db: Database, owner_conn: asyncpg.Connection) -> None:
    name = f"commit-{uuid.uuid4().hex[:8]}"
    async with db.system() as conn:
        await conn.execute("INSERT INTO vehicles (name) VALUES ($1)", name)
        await conn.execute("SAVEPOINT s")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO vehicles (name) VALUES ('')")
        await conn.execute("ROLLBACK TO SAVEPOINT s")
    assert await owner_conn.fetchval("SELECT count(*) FROM vehicles WHERE name = $1", name) == 1


def test_context_statement_accepts_only_known_values() -> None:
    assert "'42'" in _begin_statement(Tenant.owner(42)) and "'owner'" in _begin_statement(Tenant.owner(42))
    assert "'superuser'" in _begin_statement(Tenant.system())
    with pytest.raises(ValueError):
        _begin_statement(Tenant(1, "admin'; DROP TABLE users; --"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _begin_statement(Tenant("1; --", "owner"))  # type: ignore[arg-type]


class _AsyncpgLikePool:
    """asyncpg's hand-out in miniature: idle connections in an `asyncio.LifoQueue`, waiters on its `get()`."""

    def __init__(self, size: int) -> None:
        self.idle: asyncio.LifoQueue[str] = asyncio.LifoQueue()
        for i in range(size):
            self.idle.put_nowait(f"connection-{i}")

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[str]:
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            self.idle.put_nowait(conn)


async def _hand_out_order(pool: _AsyncpgLikePool, connection: Any) -> list[str]:
    """One connection, three callers waiting for it, and a fourth that asks as it is released."""
    order: list[str] = []
    late: list[asyncio.Task[None]] = []
    holding = asyncio.Event()
    done = asyncio.Event()

    async def use(name: str) -> None:
        async with connection():
            order.append(name)
            if name == "first":
                holding.set()
                await done.wait()
                # Runs before the release below wakes the first waiter.
                late.append(asyncio.create_task(use("late")))

    first = asyncio.create_task(use("first"))
    await holding.wait()
    waiters = [asyncio.create_task(use(f"waiter-{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    done.set()
    await asyncio.gather(first, *waiters)
    await asyncio.gather(*late)
    return order


async def test_connections_are_handed_out_first_come_first_served() -> None:
    """A caller that asks while others wait queues behind them, even when it runs before the woken waiter."""
    pool = _AsyncpgLikePool(1)
    # The pool alone: the newcomer takes the connection ahead of the three that were waiting.
    assert (await _hand_out_order(pool, pool.acquire))[:2] == ["first", "late"]
    fair = FairAcquire(pool, 1)  # type: ignore[arg-type]
    assert await _hand_out_order(pool, fair.connection) == [
        "first",
        "waiter-0",
        "waiter-1",
        "waiter-2",
        "late",
    ]


async def test_pool_connections_come_through_the_fair_queue(db: Database) -> None:
    assert await db.ping()
    async with db.tenant(Tenant.system()) as conn:
        assert await conn.fetchval("SELECT 1") == 1
    assert db.pool_stats["size"] >= 1


async def test_pooled_sessions_hand_dirty_pages_to_the_kernel_early(db: Database) -> None:
    # The ingest writers evict dirty buffers by the gigabyte; without an early flush, the page cache's
    # backlog made commits wait for their WAL fsync (ACK stalls, docs/PERFORMANCE.md).
    # Set when a connection opens (a SET, not a startup parameter a pooler could refuse) and kept across
    # the pool's releases.
    for _ in range(3):
        async with db.system() as conn:
            assert await conn.fetchval("SELECT current_setting('backend_flush_after')") == "256kB"
