"""Scheduled backups inside `fleet serve` (the maintenance role), for deployments without a systemd timer.

Every `BACKUP_CHECK_INTERVAL_SEC` the job looks at the newest successful backup in `backup_runs` (from any
host, any way of taking it); when it is older than `BACKUP_INTERVAL_HOURS` it takes one, under a database
advisory lock so that only one process of a multi-process deployment does. `BACKUP_INTERVAL_HOURS=0` (the
default) leaves backups to the systemd timer or cron (docs/OPERATIONS.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import asyncpg
import structlog

from fleet.ops.backup.status import latest_success
from fleet.ops.jobs import PeriodicJob

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

BACKUP_CHECK_INTERVAL_SEC = 900.0
BACKUP_LOCK_KEY = 0x464C424B50  # "FLBKP": one backup at a time per database
DUE_SLACK_SEC = 300.0  # a backup due within this is taken now (a check never lands exactly on time)


async def backup_if_due(runtime: Runtime) -> str:
    """Take a backup when one is due; return what happened (for the logs and tests)."""
    from fleet.ops.backup.dump import create_backup

    settings = runtime.settings
    if settings.backup_interval_hours <= 0:
        return "disabled"
    owner_dsn = runtime.db.owner_dsn
    if owner_dsn is None:
        return "no database"
    async with runtime.db.system() as conn:
        last = await latest_success(conn)
    if (
        last is not None
        and time.time() - last.finished_at.timestamp() < settings.backup_interval_hours * 3600 - DUE_SLACK_SEC
    ):
        return "not due"
    conn = await asyncpg.connect(owner_dsn)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", BACKUP_LOCK_KEY):
            return "another process is backing up"
        result = await create_backup(owner_dsn, settings, verify=settings.backup_verify)
    finally:
        await conn.close()  # releases the session-level lock
    return f"backed up to {result.path.name}"


def backup_job(runtime: Runtime) -> PeriodicJob:
    return PeriodicJob(
        "backup",
        lambda: backup_if_due(runtime),
        interval=BACKUP_CHECK_INTERVAL_SEC,
        timeout=runtime.settings.backup_timeout_sec,
        tolerance=2 * 3600,
        on_success=lambda outcome: log.debug("backup_check", outcome=outcome),
    )
