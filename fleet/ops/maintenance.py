"""Maintenance role: partitions ahead of time, stranded rows re-homed, retention applied.

Runs once at start and then every `MAINTENANCE_INTERVAL_SEC`. Every step is idempotent, so several
processes running it at once is harmless (partition creation takes an advisory lock in the database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import structlog

from fleet.config import Settings
from fleet.db import Database

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL_SEC = 3600
PARTITIONS_AHEAD_MONTHS = 2


@dataclass
class MaintenanceReport:
    partitions_created: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0


def _deleted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0


async def run_maintenance(db: Database, settings: Settings, now: datetime | None = None) -> MaintenanceReport:
    """Create partitions ahead, re-home rows from default partitions, apply retention."""
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    async with db.system() as conn:
        report.partitions_created += await conn.fetchval(
            "SELECT fleet_ensure_partitions_ahead($1)", PARTITIONS_AHEAD_MONTHS
        )
        report.partitions_created += await conn.fetchval("SELECT fleet_drain_default_partitions()")
    partitioned_retention = {
        "positions": settings.position_retention_days,
        "measurements": settings.measurement_retention_days,
        "raw_frames": settings.raw_frame_retention_days,
        "can_data": settings.position_retention_days,
    }
    for table, days in partitioned_retention.items():
        async with db.system() as conn:
            report.partitions_dropped += await conn.fetchval(
                "SELECT fleet_drop_partitions_before($1, $2)", table, now - timedelta(days=days)
            )
    row_retention = [
        ("sync_journal", "started_at", settings.sync_journal_retention_days),
        ("admin_audit_log", "time", settings.audit_log_retention_days),
        ("events", "time", settings.position_retention_days),
    ]
    async with db.system() as conn:
        for table, column, days in row_retention:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE {column} < $1", now - timedelta(days=days)
            )
            report.rows_deleted += _deleted(status)
        report.rows_deleted += _deleted(
            await conn.execute("DELETE FROM revoked_tokens WHERE expires_at < $1", now)
        )
        report.rows_deleted += _deleted(
            await conn.execute("DELETE FROM refresh_tokens WHERE expires_at < $1", now)
        )
    log.info("maintenance_done", **asdict(report))
    return report


async def _loop(runtime: Runtime) -> None:
    while True:
        try:
            await run_maintenance(runtime.db, runtime.settings)
        except (OSError, asyncpg.PostgresError) as err:
            log.error("maintenance_failed", error=str(err))
        await asyncio.sleep(MAINTENANCE_INTERVAL_SEC)


@asynccontextmanager
async def maintenance_role(runtime: Runtime) -> AsyncIterator[None]:
    task = runtime.spawn(_loop(runtime), name="maintenance")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
