"""The tenant transaction: committed on success, rolled back on error, context never leaks."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from fleet.db import Database, Tenant
from fleet.db.database import _begin_statement


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
