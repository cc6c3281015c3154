"""The `ingest` role of `fleet serve`: the device listener with its writer and the live-bus hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog

from fleet.ingest.service import IngestService
from fleet.ops.bus import ensure_bus

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

# Seconds a graceful stop may spend committing (and acknowledging) what was already received.
STOP_GRACE_SEC = 10.0


@asynccontextmanager
async def ingest_role(runtime: Runtime) -> AsyncIterator[None]:
    """Listen for devices; on exit stop accepting, commit in-flight batches, ACK what committed."""
    bus, created_bus = await ensure_bus(runtime)
    service = IngestService(runtime.settings, runtime.db, bus)
    try:
        await service.start()
    except BaseException:
        if created_bus:
            await bus.close()
            runtime.extras.pop("bus", None)
        raise
    runtime.extras["ingest"] = service
    runtime.extras["ingest_stats"] = service.snapshot
    try:
        yield
    finally:
        await service.stop(STOP_GRACE_SEC)
        runtime.extras.pop("ingest_stats", None)
        runtime.extras.pop("ingest", None)
        if created_bus:
            await bus.close()
            runtime.extras.pop("bus", None)
