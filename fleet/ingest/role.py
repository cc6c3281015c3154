"""The `ingest` role of `fleet serve`: the device listener with its writer and the live-bus hook."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import structlog

from fleet.ingest.service import IngestService
from fleet.ops.bus import ensure_bus

if TYPE_CHECKING:
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

# Seconds a graceful stop may spend committing (and acknowledging) what was already received.
STOP_GRACE_SEC = 10.0
# Cyclic-GC generation-0 threshold while the role runs (CPython's default is 700 allocations). Ingestion
# allocates heavily but acyclically (rows, dicts, tuples freed by reference counting), so the default only
# makes full collections frequent - and a full collection scans every object of every open connection,
# stalling the event loop for tens of milliseconds at 10,000 connections (measured: 70-90 ms pauses in
# socket callbacks under load, gone with this threshold).
GC_GEN0_THRESHOLD = 50_000


@contextmanager
def gc_tuned_for_ingest() -> Iterator[None]:
    """Freeze the start-up heap out of collections and raise the gen-0 threshold; restore on exit."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(previous[0], GC_GEN0_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


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
        with gc_tuned_for_ingest():
            yield
    finally:
        await service.stop(STOP_GRACE_SEC)
        runtime.extras.pop("ingest_stats", None)
        runtime.extras.pop("ingest", None)
        if created_bus:
            await bus.close()
            runtime.extras.pop("bus", None)
