"""Scale-out over the live bus: two real `fleet serve --role api` processes and a separate
`fleet serve --role ingest` process; a tracker's positions, stored by the ingest process, reach WebSocket
viewers on both API processes through Redis pub/sub (REDIS_URL) or core NATS (NATS_URL)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fleet.config import Settings
from fleet.db import Database
from tests.api.conftest import make_account, make_fleet
from tests.ingest.conftest import NavtelecomDriver, ServerProcess, Tracker, archive_frame, free_port
from tests.live.conftest import ws_client

pytestmark = pytest.mark.slow

BACKENDS = [
    pytest.param(
        "redis",
        marks=[
            pytest.mark.redis,
            pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set"),
        ],
    ),
    pytest.param(
        "nats", marks=pytest.mark.skipif(not os.environ.get("TEST_NATS_URL"), reason="NATS_URL not set")
    ),
]


def _env(test_settings: Settings, db: Database, data_dir: Path, backend: str, **extra: str) -> dict[str, str]:
    assert db.owner_dsn is not None and test_settings.db_app_password is not None
    assert test_settings.secret_key is not None
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DB_", "INGEST_", "SERVER_", "TELTONIKA_", "API_", "REDIS_", "TEST_"))
    }
    env.update(
        {
            "DATABASE_URL": db.owner_dsn,
            "DB_APP_PASSWORD": test_settings.db_app_password.get_secret_value(),
            "DB_MIGRATE_ON_START": "0",
            "DATA_DIR": str(data_dir),
            # The test mints the viewer's token with the session's key: every API process must accept it.
            "SECRET_KEY": test_settings.secret_key.get_secret_value(),
            "API_KEY": "bus-test-api-key-0123456789",
            "ENV": "test",
            "LOG_FORMAT": "json",
            "SERVER_HOST": "127.0.0.1",
            "TELTONIKA_PORT": "0",
            "INGEST_BATCH_WINDOW_MS": "5",
            "API_HOST": "127.0.0.1",
        }
    )
    # Redis serves rate limits in both variants; the bus is NATS when NATS_URL is set.
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    if backend == "nats":
        env["NATS_URL"] = os.environ["TEST_NATS_URL"]  # tests/conftest.py moved NATS_URL there
    env.update(extra)
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[dict[str, str], int, tuple[str, ...]], ServerProcess]]:
    started: list[ServerProcess] = []

    def make(env: dict[str, str], port: int, roles: tuple[str, ...]) -> ServerProcess:
        server = ServerProcess(env, port, Path(env["DATA_DIR"]) / "server.log", roles)
        started.append(server)
        return server

    yield make
    for server in started:  # SIGTERM to all first: they shut down in parallel
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
    for server in started:
        server.stop()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_positions_stored_by_an_ingest_process_reach_viewers_of_two_api_processes(
    backend: str,
    test_settings: Settings,
    db: Database,
    tmp_path: Path,
    processes: Callable[[dict[str, str], int, tuple[str, ...]], ServerProcess],
) -> None:
    owner = await make_account(db, test_settings, role="owner")
    fleet = await make_fleet(db, owner)
    servers = []
    for name, roles in (("api-a", ("api",)), ("api-b", ("api",)), ("ingest", ("ingest",))):
        data_dir = tmp_path / name
        data_dir.mkdir()
        port = free_port()
        extra = {"API_PORT": str(port)} if roles == ("api",) else {"SERVER_PORT": str(port)}
        servers.append(processes(_env(test_settings, db, data_dir, backend, **extra), port, roles))
    # Start the three together (each waits for its port), then make sure the APIs answer.
    await asyncio.gather(*(asyncio.to_thread(s.start, 60.0) for s in servers))
    api_a, api_b, ingest = servers
    async with httpx.AsyncClient(timeout=10) as http:
        for api in (api_a, api_b):
            try:
                health = await http.get(f"http://127.0.0.1:{api.port}/health")
            except httpx.HTTPError as err:
                raise AssertionError(f"{err}:\n{api.log_path.read_text()[-3000:]}") from err
            assert health.status_code == 200

    marker = round(10 + uuid.uuid4().int % 10_000 / 1000, 4)  # a latitude no other test sends
    path = f"/ws/vehicles/{fleet.vehicle_id}/live?token={owner.token}"
    async with (
        ws_client(f"ws://127.0.0.1:{api_a.port}{path}") as viewer_a,
        ws_client(f"ws://127.0.0.1:{api_b.port}/ws/fleet?token={owner.token}") as viewer_b,
    ):
        for viewer in (viewer_a, viewer_b):
            await viewer.wait_for(lambda m: m["type"] == "hello")
        tracker = await Tracker.connect(ingest.port)
        try:
            driver = NavtelecomDriver()
            await driver.login(tracker, fleet.imei)
            await tracker.send(archive_frame(0, 3, lat=marker))
            assert await tracker.read(driver.ack_size) == driver.ack(3)  # stored, then acknowledged
        finally:
            await tracker.close()

        def ours(message: dict[str, object]) -> bool:
            latitude = message.get("latitude")
            return (
                message.get("type") == "position"
                and message.get("vehicle_id") == fleet.vehicle_id
                and isinstance(latitude, float)
                and abs(latitude - (marker + 2e-4)) < 1e-6  # the newest of the three records
            )

        for viewer in (viewer_a, viewer_b):
            position = await viewer.wait_for(ours, within=15)
            assert position["device_id"] == fleet.device_id
    for server in servers:
        events = {e.get("event") for e in server.log_events()}
        assert "server_ready" in events
