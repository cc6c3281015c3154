"""The `sync` role of `fleet serve`: the sync service and its coordinator loop inside the server process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fleet.sync.scheduler import SyncScheduler
from fleet.sync.service import SyncService

if TYPE_CHECKING:
    from fleet.runtime import Runtime

# After a stop request, pulls in flight get this long beyond one request timeout to finish and be journaled.
STOP_GRACE_SEC = 5.0


@asynccontextmanager
async def sync_role(runtime: Runtime) -> AsyncIterator[None]:
    """Start the coordinator loop; on exit let running pulls finish, then release leases."""
    settings = runtime.settings
    async with SyncService(runtime.db, settings) as service:
        scheduler = SyncScheduler(service)
        runtime.extras["sync"] = service
        unsubscribe = runtime.on_settings_change(service.apply_settings)
        runtime.jobs.add(scheduler.job)
        task = runtime.spawn(scheduler.run(), name="sync")
        try:
            yield
        finally:
            unsubscribe()
            runtime.jobs.remove(scheduler.job)
            scheduler.stop()
            try:
                await asyncio.wait_for(
                    asyncio.shield(task), timeout=settings.pull_timeout_sec + STOP_GRACE_SEC
                )
            except TimeoutError:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(task, return_exceptions=True)
