"""Operations jobs that live with the API (the process Prometheus scrapes and load balancers ask /ready)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from fleet.ops.backup.status import BackupMonitor

if TYPE_CHECKING:
    from fleet.runtime import Runtime


def start_api_jobs(runtime: Runtime, stack: AsyncExitStack) -> None:
    """Keep the last-backup state fresh for `/ready` and `fleet_backup_*` (stopped with the stack)."""
    if runtime.backup_monitor is None:
        runtime.backup_monitor = BackupMonitor(runtime.db)
        stack.callback(setattr, runtime, "backup_monitor", None)
    stack.callback(runtime.run_job(runtime.backup_monitor.job()).cancel)
