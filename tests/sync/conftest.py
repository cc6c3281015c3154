"""Fixtures of the sync tests: settings with short timeouts, vehicles of our own, journal readers.

The database is shared with other components' tests, so every test creates vehicles with unique names,
runs cycles restricted to its own vehicle ids (`only=`), and reads back rows filtered by those ids.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from fleet.config import Settings
from fleet.db import Database
from fleet.sync.service import Clock, SyncService, utc_now

DEFAULT_KEY = "default-vehicle-key-0123456789"


@pytest.fixture
def sync_settings(test_settings: Settings) -> Settings:
    return test_settings.model_copy(
        update={
            "pull_timeout_sec": 1.0,
            "sync_interval_sec": 30.0,
            "pull_window_sec": 60,
            "vehicle_default_api_key": SecretStr(DEFAULT_KEY),
            "sync_concurrency": 8,
            "sync_max_rows_per_request": 5000,
            "sync_lease_sec": 60.0,
            "sync_backoff_max_sec": 600.0,
        }
    )


VehicleFactory = Callable[..., Any]


@pytest.fixture
def make_vehicle(db: Database) -> VehicleFactory:
    """Create a vehicle pointing at 127.0.0.1:`port`; returns its id."""

    async def create(
        port: int | None,
        *,
        api_key: str | None = None,
        last_sync_at: datetime | None = None,
        host: str | None = "127.0.0.1",
    ) -> int:
        async with db.system() as conn:
            vehicle_id: int = await conn.fetchval(
                """INSERT INTO vehicles (name, vpn_ip, api_port, api_key, last_sync_at)
                   VALUES ($1, $2::inet, $3, $4, $5) RETURNING id""",
                f"sync-test-{uuid.uuid4().hex[:10]}",
                host if port is not None else None,
                port or 8001,
                api_key,
                last_sync_at,
            )
        return vehicle_id

    return create


@pytest.fixture
def service_factory(db: Database, sync_settings: Settings) -> Callable[..., SyncService]:
    def build(
        now: Clock = utc_now, settings: Settings | None = None, owner: str | None = None
    ) -> SyncService:
        return SyncService(db, settings or sync_settings, now=now, owner=owner)

    return build


@pytest.fixture
async def service(service_factory: Callable[..., SyncService]) -> AsyncIterator[SyncService]:
    async with service_factory() as running:
        yield running


async def vehicle_row(db: Database, vehicle_id: int) -> asyncpg.Record:
    async with db.system() as conn:
        row: asyncpg.Record = await conn.fetchrow("SELECT * FROM vehicles WHERE id = $1", vehicle_id)
    return row


async def journal(db: Database, vehicle_id: int) -> list[asyncpg.Record]:
    async with db.system() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM sync_journal WHERE vehicle_id = $1 ORDER BY id", vehicle_id
        )
    return rows


async def measurement_count(db: Database, vehicle_id: int) -> int:
    async with db.system() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM measurements WHERE vehicle_id = $1", vehicle_id
        )
    return count


async def set_last_sync(db: Database, vehicle_id: int, value: datetime | None) -> None:
    async with db.system() as conn:
        await conn.execute(
            "UPDATE vehicles SET last_sync_at = $2, alarms_synced_at = $2, sync_next_at = NULL WHERE id = $1",
            vehicle_id,
            value,
        )
