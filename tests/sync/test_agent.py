"""The sync cycle against the reference vehicle agent over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet.agent.config import AgentConfig, FaultEndpoint, FaultMode
from fleet.agent.store import Alarm
from fleet.agent.testing import AgentHandle, running_agent_handle
from fleet.agent.times import now_ms
from fleet.db import Database
from fleet.sync.parse import parse_time
from fleet.sync.service import SyncService
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory, journal, measurement_count, vehicle_row


def _config(tmp_path: Path, name: str = "agent", **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "api_key": DEFAULT_KEY,
        "db_path": tmp_path / f"{name}.db",
        "seed": 11,
        "channels": 5,
        "backfill_seconds": 120,
    }
    values.update(overrides)
    return AgentConfig(**values)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentHandle]:
    async with running_agent_handle(_config(tmp_path)) as handle:
        yield handle


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


async def _agent_rows(agent: AgentHandle, start: datetime, end: datetime) -> int:
    page = await agent.store.read_window(_ms(start), _ms(end), 10_000_000)
    return len(page.rows)


def _data_windows(agent: AgentHandle) -> list[tuple[datetime, datetime]]:
    windows = []
    for request in agent.requests:
        if request.path == "/data":
            start, end = parse_time(request.query["from"]), parse_time(request.query["to"])
            assert start is not None and end is not None
            windows.append((start, end))
    return windows


async def test_a_normal_cycle_stores_status_channels_data_and_journal(
    db: Database, agent: AgentHandle, make_vehicle: VehicleFactory, service: SyncService
) -> None:
    vehicle_id = await make_vehicle(int(agent.base_url.rsplit(":", 1)[1]))
    before = datetime.now(UTC)
    report = await service.run_cycle(only=[vehicle_id])
    assert [v.status for v in report.vehicles] == ["ok"]

    assert [r.path for r in agent.requests] == ["/status", "/channels", "/data", "/alarms"]
    ((start, end),) = _data_windows(agent)
    # First sync: the last PULL_WINDOW_SEC (60 s).
    assert end - start == timedelta(seconds=60)
    assert before - timedelta(seconds=60) <= start <= datetime.now(UTC) - timedelta(seconds=60)

    row = await vehicle_row(db, vehicle_id)
    assert row["sync_status"] == "online"
    assert row["software_version"] == agent.runtime.config.software_version
    assert row["last_seen_at"] is not None
    # The agent holds the last settle_seconds back; the cursor stops where its answer ended.
    assert end - timedelta(seconds=3) <= row["last_sync_at"] <= end - timedelta(seconds=1.5)
    stored = await measurement_count(db, vehicle_id)
    assert stored == await _agent_rows(agent, start, row["last_sync_at"])
    assert stored >= 55 * 5

    async with db.system() as conn:
        channels = await conn.fetch(
            "SELECT channel_id, name, unit, min_value, max_value FROM channel_config WHERE vehicle_id = $1"
            " ORDER BY channel_id",
            vehicle_id,
        )
    expected = [(c.channel_id, c.name, c.unit, c.phys_min, c.phys_max) for c in await agent.store.channels()]
    assert [tuple(c) for c in channels] == expected

    (entry,) = await journal(db, vehicle_id)
    assert entry["status"] == "ok" and entry["rows_written"] == stored and entry["error"] is None
    assert entry["window_from"] == start and entry["window_to"] == row["last_sync_at"]
    assert entry["duration_ms"] >= 0


async def test_failed_data_keeps_last_sync_at_and_the_next_cycle_repeats_the_range(
    db: Database, agent: AgentHandle, make_vehicle: VehicleFactory, service: SyncService
) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=90)
    vehicle_id = await make_vehicle(int(agent.base_url.rsplit(":", 1)[1]), last_sync_at=since)
    agent.faults.set(FaultMode.ERROR, endpoints={FaultEndpoint.DATA}, times=1)
    report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "error"
    row = await vehicle_row(db, vehicle_id)
    assert row["last_sync_at"] == since
    assert row["sync_status"] == "online"  # /status answered: the vehicle is up, its data failed
    assert await measurement_count(db, vehicle_id) == 0
    (failed,) = await journal(db, vehicle_id)
    assert (
        failed["status"] == "error" and "HTTP 500" in failed["error"] and "fault_injected" in failed["error"]
    )

    report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "ok"
    first, second = _data_windows(agent)
    assert first[0] == second[0] == since
    row = await vehicle_row(db, vehicle_id)
    assert row["last_sync_at"] > since and row["sync_failures"] == 0
    assert await measurement_count(db, vehicle_id) == await _agent_rows(agent, since, row["last_sync_at"])


async def test_truncated_pages_are_followed_in_ten_minute_windows(
    db: Database, tmp_path: Path, make_vehicle: VehicleFactory, service: SyncService
) -> None:
    async with running_agent_handle(_config(tmp_path, backfill_seconds=25 * 60)) as agent:
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
        vehicle_id = await make_vehicle(int(agent.base_url.rsplit(":", 1)[1]), last_sync_at=since)
        agent.faults.set(FaultMode.TRUNCATE, endpoints={FaultEndpoint.DATA}, row_limit=1000)
        report = await service.run_cycle(only=[vehicle_id])
        assert report.vehicles[0].status == "ok"
        windows = _data_windows(agent)
        assert windows[0][0] == since
        # After the first truncated answer every request covers at most ten minutes.
        assert len(windows) > 3
        assert all(end - start <= timedelta(minutes=10) for start, end in windows[1:])
        assert all(a[1] >= b[0] for a, b in itertools.pairwise(windows))
        row = await vehicle_row(db, vehicle_id)
        expected = await _agent_rows(agent, since, row["last_sync_at"])
        assert expected > 5000
        assert await measurement_count(db, vehicle_id) == expected == report.vehicles[0].rows_written


async def test_status_timeout_and_error_are_journaled(
    db: Database, agent: AgentHandle, make_vehicle: VehicleFactory, service: SyncService
) -> None:
    vehicle_id = await make_vehicle(int(agent.base_url.rsplit(":", 1)[1]))
    agent.faults.set(FaultMode.SLOW, endpoints={FaultEndpoint.STATUS}, delay_seconds=3, times=1)
    report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "timeout"
    row = await vehicle_row(db, vehicle_id)
    assert row["sync_status"] == "offline" and row["last_seen_at"] is None and row["last_sync_at"] is None

    agent.faults.set(FaultMode.ERROR, endpoints={FaultEndpoint.STATUS}, status=503, times=1)
    report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "error"
    entries = await journal(db, vehicle_id)
    assert [e["status"] for e in entries] == ["timeout", "error"]
    assert "status" in entries[0]["error"] and "1 s" in entries[0]["error"]
    assert "HTTP 503" in entries[1]["error"]
    assert all(e["window_from"] is None and e["rows_written"] == 0 for e in entries)
    # /status failed: nothing else was asked
    assert {r.path for r in agent.requests} == {"/status"}
    assert (await vehicle_row(db, vehicle_id))["sync_failures"] == 2


async def test_per_vehicle_api_key_wins_over_the_default(
    db: Database, tmp_path: Path, make_vehicle: VehicleFactory, service: SyncService
) -> None:
    own_key = "vehicle-own-key-abcdefghijklmnop"
    async with (
        running_agent_handle(_config(tmp_path, "own", api_key=own_key, backfill_seconds=0)) as own,
        running_agent_handle(_config(tmp_path, "default", backfill_seconds=0)) as default,
    ):
        with_own = await make_vehicle(int(own.base_url.rsplit(":", 1)[1]), api_key=own_key)
        with_default = await make_vehicle(int(default.base_url.rsplit(":", 1)[1]))
        wrong = await make_vehicle(int(own.base_url.rsplit(":", 1)[1]))  # the default key, refused by `own`
        report = await service.run_cycle(only=[with_own, with_default, wrong])
    outcome = {v.vehicle_id: v for v in report.vehicles}
    assert outcome[with_own].status == "ok"
    assert outcome[with_default].status == "ok"
    assert outcome[wrong].status == "error"
    assert "refused the API key" in (outcome[wrong].note or "")
    # An authentication failure will not fix itself: the vehicle waits the longest backoff.
    row = await vehicle_row(db, wrong)
    assert row["sync_next_at"] - datetime.now(UTC) > timedelta(seconds=500)


async def test_an_alarm_resolution_updates_resolved_at(
    db: Database, tmp_path: Path, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    config = _config(tmp_path, simulate=False, settle_seconds=0, backfill_seconds=0)
    async with running_agent_handle(config) as agent, service_factory() as service:
        vehicle_id = await make_vehicle(int(agent.base_url.rsplit(":", 1)[1]))
        raised = now_ms() - 5000
        alarm = Alarm(424242, None, "critical", "Coolant temperature above 105 °C", raised)
        await agent.store.upsert_alarms([alarm], changed_at=raised, source="test")
        await service.run_cycle(only=[vehicle_id])
        async with db.system() as conn:
            stored = await conn.fetchrow("SELECT * FROM alarms_log WHERE vehicle_id = $1", vehicle_id)
        assert stored["alarm_id"] == 424242 and stored["level"] == "critical"
        assert stored["resolved_at"] is None

        await asyncio.sleep(0.01)
        resolved = now_ms()
        await agent.store.upsert_alarms(
            [Alarm(424242, None, "critical", alarm.message, raised, resolved)],
            changed_at=resolved,
            source="test",
        )
        await asyncio.sleep(0.01)
        report = await service.run_cycle(only=[vehicle_id], force=True)
        assert report.vehicles[0].status == "ok"
        async with db.system() as conn:
            rows = await conn.fetch("SELECT * FROM alarms_log WHERE vehicle_id = $1", vehicle_id)
    assert len(rows) == 1
    assert rows[0]["resolved_at"] == datetime.fromtimestamp(resolved / 1000, UTC)
    assert rows[0]["raised_at"] == datetime.fromtimestamp(raised / 1000, UTC)
