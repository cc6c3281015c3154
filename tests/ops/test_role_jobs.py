"""The background loops on the job helper: maintenance survives a bug, the mail sender logs a database outage
once, scheduled backups run when due and only then."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from fleet.config import Settings
from fleet.db import Database
from fleet.errors import DatabaseUnavailable
from fleet.mail.sender import MailSender
from fleet.ops import maintenance
from fleet.ops.backup.schedule import backup_if_due
from fleet.runtime import Runtime


async def test_maintenance_role_keeps_running_after_an_unexpected_error(
    db: Database, test_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def broken(*_: Any) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug in a maintenance step")

    monkeypatch.setattr(maintenance, "run_maintenance", broken)
    monkeypatch.setattr(maintenance, "MAINTENANCE_INTERVAL_SEC", 0.01)
    runtime = Runtime(settings=test_settings, db=db, roles=["maintenance"])
    with capture_logs() as logs:
        async with maintenance.maintenance_role(runtime):
            assert {job.name for job in runtime.jobs} == {"maintenance", "backup"}
            for _ in range(300):
                if calls >= 3:
                    break
                await asyncio.sleep(0.01)
    assert calls >= 3
    failing = [e for e in logs if e["event"] == "job_failing" and e["job"] == "maintenance"]
    assert len(failing) == 1 and failing[0]["kind"] == "unexpected"
    assert list(runtime.jobs) == []  # unregistered when the role stops


class _DownDatabase:
    @asynccontextmanager
    async def system(self) -> AsyncIterator[Any]:
        raise DatabaseUnavailable("the database pool is not open")
        yield


async def test_mail_sender_logs_a_database_outage_once(test_settings: Settings) -> None:
    sender = MailSender(
        _DownDatabase(), test_settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:2525"})
    )  # type: ignore[arg-type]
    with capture_logs() as logs:
        for _ in range(4):
            assert not await sender.job.run_once()
    failing = [e for e in logs if e["event"] == "job_failing"]
    assert len(failing) == 1 and failing[0]["job"] == "mail" and "exc_info" not in failing[0]
    assert sender.job.status.failures_in_episode == 4


async def test_scheduled_backup_runs_when_due(db: Database, test_settings: Settings, tmp_path: Path) -> None:
    settings = test_settings.model_copy(update={"backup_dir": tmp_path, "backup_interval_hours": 0})
    runtime = Runtime(settings=settings, db=db, roles=["maintenance"])
    assert await backup_if_due(runtime) == "disabled"
    runtime.settings = settings.model_copy(update={"backup_interval_hours": 24, "backup_verify": False})
    async with db.system() as conn:
        await conn.execute("DELETE FROM backup_runs")
    outcome = await backup_if_due(runtime)
    assert outcome.startswith("backed up to fleet-")
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".dump")]) == 1
    assert await backup_if_due(runtime) == "not due"
