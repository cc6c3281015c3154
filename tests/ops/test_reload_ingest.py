"""Reloaded ingest flags reach a running listener: new handshakes, new frames; open connections stay."""

from __future__ import annotations

import asyncpg

from fleet.config import Settings
from fleet.db import Database
from fleet.ingest import IngestService
from fleet.ops.bus import InProcessBus
from fleet.ops.process import _follow_in_ingest
from fleet.protocol.navtelecom import handshake
from fleet.runtime import Runtime
from tests.ingest.conftest import Tracker, archive_frame, unique_imei


async def _raw_frames(conn: asyncpg.Connection, imei: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM raw_frames r JOIN devices d ON d.id = r.device_id WHERE d.imei = $1", imei
        )
    )


async def test_ingest_follows_reloaded_flags(
    db: Database, test_settings: Settings, owner_conn: asyncpg.Connection
) -> None:
    settings = test_settings.model_copy(
        update={"server_host": "127.0.0.1", "ingest_bind_ephemeral": True, "ingest_batch_window_ms": 5.0}
    )
    service = IngestService(settings, db, InProcessBus())
    await service.start()
    runtime = Runtime(settings=settings, db=db, roles=["ingest"])
    runtime.extras["ingest"] = service
    _follow_in_ingest(runtime)
    try:
        connected = await Tracker.connect(service.ports["navtelecom"])
        imei = unique_imei()
        await connected.login(imei)
        await connected.send(archive_frame(1, 1))
        await connected.read(4)
        assert await _raw_frames(owner_conn, imei) >= 1
        stored = await _raw_frames(owner_conn, imei)

        runtime.apply_settings(
            settings.model_copy(update={"unknown_device_policy": "reject", "ingest_store_raw_frames": False})
        )
        # An unknown tracker is now refused ...
        stranger = await Tracker.connect(service.ports["navtelecom"])
        await stranger.send(handshake(unique_imei()))
        assert await stranger.closed_within(5)
        await stranger.close()
        # ... while the tracker already connected keeps its connection, and its frames are no longer kept raw.
        await connected.send(archive_frame(2, 1))
        assert len(await connected.read(4)) == 4
        assert await _raw_frames(owner_conn, imei) == stored
        await connected.close()
    finally:
        await service.stop(grace=5)
