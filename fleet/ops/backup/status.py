"""The record of backups (`backup_runs`) and what every process exports about the last good one.

A backup may be taken by the systemd timer, cron, another host or this process; all of them write a row.
`BackupMonitor` reads the newest success periodically (a job of the API role) for the metrics
`fleet_backup_last_success_timestamp_seconds` / `fleet_backup_last_size_bytes` and for `/ready`.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from prometheus_client import Gauge

from fleet.config import Settings
from fleet.db import Database
from fleet.ops.jobs import PeriodicJob

if TYPE_CHECKING:
    from fleet.ops.backup.dump import BackupResult

log = structlog.get_logger(__name__)

BACKUP_LAST_SUCCESS = Gauge(
    "fleet_backup_last_success_timestamp_seconds", "End of the newest successful database backup (any host)"
)
BACKUP_LAST_SIZE = Gauge("fleet_backup_last_size_bytes", "Size of the newest successful database backup")

STATUS_INTERVAL_SEC = 60.0


async def _insert(owner_dsn: str, **values: Any) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        # The owner bypasses row-level security (pg_dump needed that anyway); the tenant context is set for
        # completeness, so the row is written the same way from any role that passes the policy.
        await conn.execute("SELECT set_config('app.user_role', 'superuser', false)")
        columns = ", ".join(values)
        params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await conn.execute(f"INSERT INTO backup_runs ({columns}) VALUES ({params})", *values.values())
    finally:
        await conn.close()


async def record_success(owner_dsn: str, result: BackupResult) -> None:
    BACKUP_LAST_SUCCESS.set(result.finished_at.timestamp())
    BACKUP_LAST_SIZE.set(result.size_bytes)
    try:
        await _insert(
            owner_dsn,
            started_at=result.started_at,
            finished_at=result.finished_at,
            status="ok",
            file_name=result.path.name,
            size_bytes=result.size_bytes,
            sha256=result.sha256,
            verified=result.verified is not None and result.verified.ok,
            uploaded_to=result.uploaded_to,
            host=socket.gethostname(),
        )
    except (OSError, asyncpg.PostgresError) as err:  # the backup exists; only its record is missing
        log.warning("backup_record_failed", error=str(err))


async def record_failure(owner_dsn: str, started_at: datetime, error: str) -> None:
    try:
        await _insert(
            owner_dsn, started_at=started_at, status="failed", host=socket.gethostname(), error=error[:2000]
        )
    except (OSError, asyncpg.PostgresError) as err:
        log.warning("backup_record_failed", error=str(err))


@dataclass
class LastBackup:
    finished_at: datetime
    file_name: str | None
    size_bytes: int | None
    verified: bool
    uploaded_to: str | None
    host: str | None


async def latest_success(conn: asyncpg.Connection) -> LastBackup | None:
    row = await conn.fetchrow(
        """SELECT finished_at, file_name, size_bytes, verified, uploaded_to, host
           FROM backup_runs WHERE status = 'ok' ORDER BY finished_at DESC LIMIT 1"""
    )
    return LastBackup(**dict(row)) if row is not None else None


class BackupMonitor:
    """Keeps the newest successful backup in memory for `/ready` and the metrics."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.last: LastBackup | None = None
        self.checked = False

    async def refresh(self) -> None:
        async with self.db.system() as conn:
            self.last = await latest_success(conn)
        self.checked = True
        if self.last is not None:
            BACKUP_LAST_SUCCESS.set(self.last.finished_at.timestamp())
            BACKUP_LAST_SIZE.set(self.last.size_bytes or 0)

    def job(self) -> PeriodicJob:
        return PeriodicJob("backup-status", self.refresh, interval=STATUS_INTERVAL_SEC, timeout=30)

    def snapshot(self, settings: Settings, now: float | None = None) -> dict[str, Any]:
        """`/ready`'s view: ok, stale (older than BACKUP_MAX_AGE_HOURS), never, or unknown (not read yet)."""
        now = time.time() if now is None else now
        if not self.checked:
            return {"state": "unknown"}
        if self.last is None:
            return {"state": "never"}
        age = now - self.last.finished_at.timestamp()
        return {
            "state": "stale" if age > settings.backup_max_age_hours * 3600 else "ok",
            "last_success": self.last.finished_at.isoformat().replace("+00:00", "Z"),
            "age_s": round(age),
            "file": self.last.file_name,
            "size_bytes": self.last.size_bytes,
            "verified": self.last.verified,
            "uploaded": self.last.uploaded_to is not None,
        }
