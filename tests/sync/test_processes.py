"""`fleet sync --once`, and `fleet agent` + `fleet serve --role sync` as real processes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psycopg
import pytest

from fleet.config import Settings
from fleet.db import Database
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory
from tests.sync.doubles import FakeVehicle, serve, serve_many
from tests.sync.test_lease_backoff import _slow_status

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(settings: Settings, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_", "SERVER_", "SYNC_", "AGENT_"))
    }
    assert settings.db_app_password is not None
    env.update(
        DATABASE_URL=database_url,
        DB_APP_PASSWORD=settings.db_app_password.get_secret_value(),
        DATA_DIR=str(settings.data_dir),
        ENV="development",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        VEHICLE_DEFAULT_API_KEY=DEFAULT_KEY,
        COLUMNS="250",
    )
    env.update(extra)
    env.pop("CONFIG_FILE", None)
    return env


async def _fleet(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_sync_once_prints_a_summary_and_exits_0_even_when_vehicles_fail(
    test_settings: Settings, make_vehicle: VehicleFactory
) -> None:
    assert test_settings.database_url is not None
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    async with serve(vehicle) as port:
        healthy = await make_vehicle(port)
        unreachable = await make_vehicle(_free_port())
        code, out, err = await _fleet(
            _env(test_settings, test_settings.database_url),
            "sync",
            "--once",
            "--vehicle",
            str(healthy),
            "--vehicle",
            str(unreachable),
        )
    assert code == 0, err
    lines = {
        line.split()[1]: line for line in out.splitlines() if line.startswith("│ ") and "sync-test" in line
    }
    assert lines.keys() == {str(healthy), str(unreachable)}
    assert " ok " in lines[str(healthy)] and " 18 " in lines[str(healthy)]
    assert " error " in lines[str(unreachable)] and "ConnectError" in lines[str(unreachable)]
    assert "2 vehicle(s): 1 ok, 0 timeout, 1 error; 18 rows written" in out


async def test_sync_once_fails_cleanly_without_a_database(test_settings: Settings) -> None:
    env = _env(test_settings, f"postgresql://fleet@127.0.0.1:{_free_port()}/fleet", DB_MIGRATE_ON_START="0")
    code, out, err = await _fleet(env, "sync", "--once")
    assert code == 3
    assert "error:" in err and "Traceback" not in err + out


@pytest.fixture
async def fresh_database(pg_server_dsn: str) -> AsyncIterator[str]:
    """A database of its own: `fleet serve` syncs every vehicle it finds, so nothing else may be in it."""
    name = f"fleet_sync_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_server_dsn)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


async def _start_agent(env: dict[str, str], port: int, db_path: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet",
        "agent",
        "--port",
        str(port),
        "--api-key",
        DEFAULT_KEY,
        "--db",
        str(db_path),
        "--channels",
        "5",
        "--seed",
        "5",
        "--backfill",
        "30",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert proc.returncode is None, "the agent exited"
            try:
                if (
                    await client.get(f"http://127.0.0.1:{port}/status", headers={"X-API-Key": DEFAULT_KEY})
                ).is_success:
                    return proc
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the agent did not start")


async def _wait_for(conn: asyncpg.Connection, query: str, *args: object) -> object:
    for _ in range(300):  # 30 s
        value = await conn.fetchval(query, *args)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {query}")


async def test_agent_and_serve_fill_the_gap_after_an_outage(
    test_settings: Settings, fresh_database: str, tmp_path: Path
) -> None:
    env = _env(
        test_settings,
        fresh_database,
        SYNC_INTERVAL_SEC="1",
        PULL_TIMEOUT_SEC="2",
        SYNC_BACKOFF_MAX_SEC="2",
    )
    port = _free_port()
    agent = await _start_agent(env, port, tmp_path / "agent.db")
    server = None
    try:
        code, out, err = await _fleet(
            env, "vehicle", "add", "--name", "e2e-truck", "--vpn-ip", "127.0.0.1", "--api-port", str(port)
        )
        assert code == 0, err
        vehicle_id = int(out.strip())
        server = await _start(env, "serve", "--role", "sync")
        conn = await asyncpg.connect(fresh_database)
        try:
            # Data flows.
            await _wait_for(conn, "SELECT count(*) > 100 FROM measurements WHERE vehicle_id = $1", vehicle_id)

            # The vehicle goes away: the journal records failures and the vehicle is offline.
            # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
            assert await _stop(agent) in (0, -signal.SIGTERM)
            outage_start = datetime.now().astimezone()
            await _wait_for(
                conn,
                "SELECT count(*) >= 2 FROM sync_journal WHERE vehicle_id = $1 AND status <> 'ok' AND started_at > $2",
                vehicle_id,
                outage_start,
            )
            assert (
                await conn.fetchval("SELECT sync_status FROM vehicles WHERE id = $1", vehicle_id) == "offline"
            )
            await asyncio.sleep(3)

            # It comes back with what it recorded meanwhile; the server fills the gap.
            agent = await _start_agent(env, port, tmp_path / "agent.db")
            back = datetime.now().astimezone()
            await _wait_for(
                conn,
                "SELECT last_sync_at > $2::timestamptz + interval '3 seconds' FROM vehicles WHERE id = $1",
                vehicle_id,
                back,
            )
            first, last = await conn.fetchrow(
                "SELECT min(time), (SELECT last_sync_at FROM vehicles WHERE id = $1) FROM measurements"
                " WHERE vehicle_id = $1 AND channel_id = 1",
                vehicle_id,
            )
            assert last - first > (back - outage_start) + timedelta(seconds=3)
            seconds = await conn.fetchval(
                "SELECT count(DISTINCT time) FROM measurements WHERE vehicle_id = $1 AND channel_id = 1"
                " AND time >= $2 AND time < $3",
                vehicle_id,
                first,
                last,
            )
            # One sample a second, none missing, across the outage.
            assert seconds == int((last - first).total_seconds() + 0.999)
            statuses = [
                r[0]
                for r in await conn.fetch(
                    "SELECT status FROM sync_journal WHERE vehicle_id = $1 ORDER BY id", vehicle_id
                )
            ]
            assert (
                statuses[0] == "ok" and statuses[-1] == "ok" and "ok" in statuses and len(set(statuses)) > 1
            )
            assert (
                await conn.fetchval("SELECT sync_status FROM vehicles WHERE id = $1", vehicle_id) == "online"
            )
        finally:
            await conn.close()
        assert await _stop(server) == 0
        server = None
        conn = await asyncpg.connect(fresh_database)
        try:
            assert (
                await conn.fetchval("SELECT sync_lease_owner FROM vehicles WHERE id = $1", vehicle_id) is None
            )
        finally:
            await conn.close()
    finally:
        for proc in (server, agent):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_two_sync_processes_share_the_fleet_through_leases_without_double_fetching(
    test_settings: Settings, fresh_database: str, tmp_path: Path
) -> None:
    """Two `fleet serve --role sync` processes (two nodes) on one database: both work, no vehicle is pulled
    by both at once, and the windows a vehicle is asked for never overlap (nothing fetched twice)."""
    assert test_settings.db_app_password is not None
    migrated = Database(test_settings.model_copy(update={"database_url": fresh_database}))
    await migrated.start(migrate_schema=True, pool=False)
    await migrated.close()
    vehicles = [FakeVehicle(api_key=DEFAULT_KEY) for _ in range(6)]
    for vehicle in vehicles:  # slow answers keep both workers busy and the leases visible
        vehicle.overrides["/status"] = _slow_status(vehicle, 0.3)
    nodes: list[asyncio.subprocess.Process] = []
    conn = await asyncpg.connect(fresh_database)
    try:
        async with serve_many(vehicles) as ports:
            ids = [
                await conn.fetchval(
                    "INSERT INTO vehicles (name, vpn_ip, api_port) VALUES ($1, '127.0.0.1', $2) RETURNING id",
                    f"node-test-{port}",
                    port,
                )
                for port in ports
            ]
            for node in ("a", "b"):
                data_dir = tmp_path / node
                data_dir.mkdir()
                env = _env(
                    test_settings,
                    fresh_database,
                    DATA_DIR=str(data_dir),
                    DB_MIGRATE_ON_START="0",
                    SYNC_INTERVAL_SEC="0.5",
                    SYNC_CONCURRENCY="2",
                    PULL_TIMEOUT_SEC="5",
                )
                nodes.append(await _start(env, "serve", "--role", "sync"))
            owners: set[str] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                owners |= {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT sync_lease_owner FROM vehicles WHERE sync_lease_owner IS NOT NULL"
                    )
                }
                done = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT vehicle_id FROM sync_journal WHERE status = 'ok'"
                    " GROUP BY vehicle_id HAVING count(*) >= 3) AS v"
                )
                if done == len(ids) and len({o.split(":")[1] for o in owners}) == 2:
                    break
                await asyncio.sleep(0.05)
            for proc in nodes:  # both at once (one SIGTERM each: a second could land after the handler)
                proc.send_signal(signal.SIGTERM)
            assert [await asyncio.wait_for(proc.wait(), 30) for proc in nodes] == [0, 0]
        # Both nodes held leases (the owner names carry their PIDs).
        assert {o.split(":")[1] for o in owners} == {str(proc.pid) for proc in nodes}
        journal_counts = dict(
            await conn.fetch("SELECT vehicle_id, count(*) FROM sync_journal GROUP BY vehicle_id")
        )
        for vehicle, vehicle_id in zip(vehicles, ids, strict=True):
            assert vehicle.max_in_flight == 1  # never pulled by both nodes at once
            assert vehicle.count("/status") == journal_counts[vehicle_id]  # one pull per journal row
            windows = sorted(vehicle.windows())
            assert windows
            for (_, end), (start, _) in itertools.pairwise(windows):
                assert start >= end, f"vehicle {vehicle_id}: overlapping windows {windows}"
            assert await conn.fetchval(
                "SELECT count(*) = count(DISTINCT (channel_id, time)) FROM measurements WHERE vehicle_id = $1",
                vehicle_id,
            )
    finally:
        await conn.close()
        for proc in nodes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
