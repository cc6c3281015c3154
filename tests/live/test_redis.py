"""With Redis as the bus (`REDIS_URL`), a viewer of one API process sees what another process published."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.live.hub import LiveHub
from fleet.ops.bus import RedisBus
from fleet.runtime import Runtime
from tests.api.conftest import Account, make_fleet
from tests.live.conftest import LiveWsServer, ws_client

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set"),
]

# Another process: publishes one position on the Redis bus, exactly as an ingest process would.
PUBLISHER = """
import asyncio, json, sys
from fleet.ops.bus import RedisBus

async def main():
    bus = RedisBus(sys.argv[1])
    await bus.publish_many("positions", [json.loads(sys.argv[2])])
    await bus.close()

asyncio.run(main())
"""


@pytest.fixture
async def redis_server(live_settings: Settings, db: Database) -> AsyncIterator[LiveWsServer]:
    settings = live_settings.model_copy(update={"redis_url": os.environ["REDIS_URL"]})
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    server = LiveWsServer(create_app(settings, runtime=runtime), settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await runtime.cancel_tasks()


async def test_a_position_published_by_another_process_reaches_the_viewer(
    redis_server: LiveWsServer, db: Database, owner: Account
) -> None:
    hub: LiveHub = redis_server.server.config.app.state.api.live
    assert isinstance(hub.bus, RedisBus)
    fleet = await make_fleet(db, owner)
    marker = 40 + uuid.uuid4().int % 1000 / 1000  # a latitude no other test publishes
    payload = {
        "type": "positions",
        "device_id": fleet.device_id,
        "vehicle_id": fleet.vehicle_id,
        "imei": fleet.imei,
        "count": 1,
        "time": datetime.now(UTC).isoformat(),
        "latitude": marker,
        "longitude": 30.0,
        "speed": 10.0,
        "course": 0.0,
        "committed_at": datetime.now(UTC).timestamp(),
    }
    url = f"{redis_server.ws_url}/ws/vehicles/{fleet.vehicle_id}/live?token={owner.token}"
    async with (
        ws_client(url) as viewer,
        ws_client(f"{redis_server.ws_url}/ws/fleet?token={owner.token}") as fleet_viewer,
    ):
        await viewer.wait_for(lambda m: m["type"] == "hello")
        await fleet_viewer.wait_for(lambda m: m["type"] == "hello")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, os.environ["REDIS_URL"], json.dumps(payload)
        )
        assert await process.wait() == 0
        for client in (viewer, fleet_viewer):
            position = await client.wait_for(lambda m: m["type"] == "position", within=15)
            assert position["latitude"] == marker and position["vehicle_id"] == fleet.vehicle_id
