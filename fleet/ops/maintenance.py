"""Maintenance role: partitions ahead of time, stranded rows re-homed, retention applied, scheduled backups.

Runs as periodic jobs (`fleet.ops.jobs`): `maintenance` at start and then every `MAINTENANCE_INTERVAL_SEC`
after the previous run ended, `backup` every `BACKUP_CHECK_INTERVAL_SEC` (it backs up only when the newest
backup is older than `BACKUP_INTERVAL_HOURS`). Every step is idempotent, so several processes running it at
once is harmless (partition creation takes an advisory lock in the database, a backup another one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from fleet.config import Settings
from fleet.db import Database
from fleet.ops import retention
from fleet.ops.jobs import PeriodicJob

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL_SEC = 3600
MAINTENANCE_TIMEOUT_SEC = 1800
PARTITIONS_AHEAD_MONTHS = 2


@dataclass
class MaintenanceReport:
    partitions_created: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0


async def run_maintenance(db: Database, settings: Settings, now: datetime | None = None) -> MaintenanceReport:
    """Create partitions ahead, re-home rows from default partitions, apply retention."""
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    async with db.system() as conn:
        report.partitions_created += await conn.fetchval(
            "SELECT fleet_ensure_partitions_ahead($1)", PARTITIONS_AHEAD_MONTHS
        )
        report.partitions_created += await conn.fetchval("SELECT fleet_drain_default_partitions()")
    applied = await retention.apply(db, settings, now)
    report.partitions_dropped = applied.partitions_dropped
    report.rows_deleted = applied.rows_deleted
    log.info(
        "maintenance_done",
        partitions_created=report.partitions_created,
        partitions_dropped=report.partitions_dropped,
        rows_deleted=report.rows_deleted,
    )
    return report


@asynccontextmanager
async def maintenance_role(runtime: Runtime) -> AsyncIterator[None]:
    from fleet.ops.backup.schedule import backup_job

    maintenance = PeriodicJob(
        "maintenance",
        lambda: run_maintenance(runtime.db, runtime.settings),
        interval=MAINTENANCE_INTERVAL_SEC,
        timeout=MAINTENANCE_TIMEOUT_SEC,
        tolerance=3 * MAINTENANCE_INTERVAL_SEC,
    )
    backup = backup_job(runtime)
    tasks = [runtime.run_job(maintenance), runtime.run_job(backup)]
    try:
        yield
    finally:
        import asyncio

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
