"""Pull vehicles live: one shared poller of the reference agent's `/data/latest`, offline/online when the agent
stops and starts, and positions made from GPS channels (live, and stored by the sync service)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.agent.config import AgentConfig
from fleet.agent.testing import AgentHandle, running_agent_handle
from fleet.config import Settings
from fleet.db import Database
from fleet.live.hub import LiveHub
from fleet.sync.service import SyncService
from tests.api.conftest import Account
from tests.live.conftest import AGENT_KEY, LiveWsServer, ws_client


def agent_config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "api_key": AGENT_KEY,
        "db_path": tmp_path / "agent.db",
        "seed": 5,
        "channels": 20,  # speed, engine_rpm, ..., latitude (16), longitude (17), heading, altitude, satellites
        "rate_hz": 2.0,
        "backfill_seconds": 0,
    }
    values.update(overrides)
    return AgentConfig(**values)


async def pull_vehicle(db: Database, owner: Account, port: int, **columns: Any) -> int:
    async with db.system() as conn:
        vehicle_id: int = await conn.fetchval(
            """INSERT INTO vehicles (name, vpn_ip, api_port, gps_channels)
               VALUES ($1, '127.0.0.1', $2, $3) RETURNING id""",
            f"pull-{uuid.uuid4().hex[:8]}",
            port,
            columns.get("gps_channels"),
        )
        await conn.execute(
            "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", owner.id, vehicle_id
        )
    return vehicle_id


def latest_polls(agent: AgentHandle) -> int:
    return sum(1 for r in agent.requests if r.path == "/data/latest")


def url(server: LiveWsServer, vehicle_id: int, owner: Account) -> str:
    return f"{server.ws_url}/ws/vehicles/{vehicle_id}/live?token={owner.token}"


async def test_two_viewers_share_one_poller(
    live_server: LiveWsServer,
    db: Database,
    owner: Account,
    hub: LiveHub,
    live_settings: Settings,
    tmp_path: Path,
) -> None:
    async with running_agent_handle(agent_config(tmp_path)) as agent:
        vehicle_id = await pull_vehicle(db, owner, int(agent.base_url.rsplit(":", 1)[1]))
        async with (
            ws_client(url(live_server, vehicle_id, owner)) as first,
            ws_client(url(live_server, vehicle_id, owner)) as second,
        ):
            hello = await first.wait_for(lambda m: m["type"] == "hello")
            assert hello["sources"] == ["pull"]
            await second.wait_for(lambda m: m["type"] == "hello")
            values = [await c.wait_for(lambda m: m["type"] == "values") for c in (first, second)]
            named = {item["name"]: item for item in values[0]["values"]}
            assert named["engine_rpm"]["unit"] == "rpm" and isinstance(named["engine_rpm"]["value"], float)
            assert named["latitude"]["time"].endswith("Z") and values[0]["vehicle_id"] == vehicle_id
            # The agent's latitude/longitude channels make positions on the stream too.
            position = await first.wait_for(lambda m: m["type"] == "position", within=10)
            assert position["source"] == "pull" and position["device_id"] is None
            assert position["latitude"] == pytest.approx(named["latitude"]["value"], abs=0.01)

            assert hub.pollers.get(vehicle_id) is not None and len(hub.pollers) >= 1
            before, started = latest_polls(agent), asyncio.get_running_loop().time()
            await asyncio.sleep(3.0)
            polls = latest_polls(agent) - before
            elapsed = asyncio.get_running_loop().time() - started
            # One poller at one poll per interval (plus one in flight): two pollers would make twice as many.
            assert 2 <= polls <= elapsed / live_settings.live_poll_interval_sec + 2

            # A third viewer joining later gets the values already known in its first message.
            async with ws_client(url(live_server, vehicle_id, owner)) as third:
                late = await third.wait_for(lambda m: m["type"] == "hello")
                assert {item["name"] for item in late["values"]} >= {"engine_rpm", "latitude"}
        # The last viewer gone: the poller stops, and so do the requests.
        for _ in range(50):
            if hub.pollers.get(vehicle_id) is None:
                break
            await asyncio.sleep(0.05)
        assert hub.pollers.get(vehicle_id) is None
        after = latest_polls(agent)
        await asyncio.sleep(1.0)
        assert latest_polls(agent) == after


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_offline_and_online_as_the_agent_stops_and_starts(
    live_server: LiveWsServer, db: Database, owner: Account, tmp_path: Path
) -> None:
    port = free_port()
    vehicle_id = await pull_vehicle(db, owner, port)

    async def rest_status() -> str:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            response = await http.get(f"/vehicles/{vehicle_id}/status", headers=owner.headers)
        status: str = response.json()["status"]
        return status

    def state(value: str) -> Any:
        return lambda m: m["type"] == "status" and m["state"] == value

    async with ws_client(url(live_server, vehicle_id, owner)) as viewer:
        hello = await viewer.wait_for(lambda m: m["type"] == "hello")
        assert hello["status"]["state"] == "unknown"  # never reached yet: no agent listens
        offline = await viewer.wait_for(state("offline"))  # the first poll fails: offline, not unknown
        assert offline["reason"] == "the vehicle did not answer its latest pull"
        assert await rest_status() == "offline"  # the REST API applies the same rule to the same facts
        async with running_agent_handle(agent_config(tmp_path), port=port):
            online = await viewer.wait_for(state("online"))
            assert online["last_activity_at"].endswith("Z") and online["reason"] is None
            assert await rest_status() == "online"
            await viewer.wait_for(lambda m: m["type"] == "values")
            seen = len(viewer.messages)  # before the agent stops: its shutdown may already fail a poll
        await viewer.wait_for(state("offline"), since=seen)
        assert viewer.closed is None  # the socket stays open while the vehicle is away
        assert await rest_status() == "offline"
        async with running_agent_handle(agent_config(tmp_path), port=port):
            await viewer.wait_for(state("online"), since=seen)
            assert [m["state"] for m in viewer.messages[seen:] if m["type"] == "status"] == [
                "offline",
                "online",
            ]


async def test_sync_stores_positions_of_a_vehicle_with_gps_channels(
    live_server: LiveWsServer, db: Database, owner: Account, live_settings: Settings, tmp_path: Path
) -> None:
    async with running_agent_handle(agent_config(tmp_path, backfill_seconds=120, rate_hz=1.0)) as agent:
        port = int(agent.base_url.rsplit(":", 1)[1])
        vehicle_id = await pull_vehicle(db, owner, port)
        no_gps = await pull_vehicle(db, owner, port, gps_channels={"off": True})
        async with SyncService(db, live_settings) as service:
            report = await service.run_cycle(only=[vehicle_id, no_gps], force=True)
    assert {v.status for v in report.vehicles} == {"ok"}
    async with db.system() as conn:
        rows = await conn.fetch(
            """SELECT device_id, device_time, latitude, longitude, speed, course, altitude, satellites
               FROM positions WHERE vehicle_id = $1 ORDER BY device_time""",
            vehicle_id,
        )
        measured = await conn.fetchval(
            "SELECT count(DISTINCT time) FROM measurements WHERE vehicle_id = $1 AND channel_id = 16",
            vehicle_id,
        )
        assert await conn.fetchval("SELECT count(*) FROM positions WHERE vehicle_id = $1", no_gps) == 0
    assert len(rows) == measured >= 50  # one position per second of the first window (PULL_WINDOW_SEC)
    first = rows[0]
    assert first["device_id"] is None and -90 <= first["latitude"] <= 90 and first["speed"] is not None
    assert first["course"] is not None and first["altitude"] is not None and first["satellites"] is not None

    async with httpx.AsyncClient(base_url=live_server.url, headers=owner.headers) as http:
        latest = {i["vehicle_id"]: i for i in (await http.get("/vehicles/latest-positions")).json()["items"]}
        assert latest[vehicle_id]["time"] == rows[-1]["device_time"].astimezone(UTC).isoformat().replace(
            "+00:00", "Z"
        )
        assert no_gps not in latest
        status = (await http.get(f"/vehicles/{vehicle_id}/status")).json()
        assert status["last_position"]["latitude"] == pytest.approx(rows[-1]["latitude"])
        span = {
            "from": (rows[0]["device_time"] - timedelta(seconds=1)).isoformat(),
            "to": datetime.now(UTC).isoformat(),
        }
        gpx = await http.get(f"/vehicles/{vehicle_id}/positions", params={**span, "format": "gpx"})
        assert gpx.text.count("<trkpt") == len(rows)
        csv = await http.get(f"/vehicles/{vehicle_id}/positions", params={**span, "format": "csv"})
        assert len(csv.text.strip().splitlines()) == len(rows) + 1

    # A pull repeated over the same range stores no position twice.
    async with running_agent_handle(agent_config(tmp_path, backfill_seconds=120, rate_hz=1.0), port=port):
        async with db.system() as conn:
            await conn.execute("UPDATE vehicles SET last_sync_at = NULL WHERE id = $1", vehicle_id)
        async with SyncService(db, live_settings) as service:
            await service.run_cycle(only=[vehicle_id], force=True)
    async with db.system() as conn:
        again = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT device_time) FROM positions WHERE vehicle_id = $1", vehicle_id
        )
    assert again == 0
