"""The pull window of seed 003 against a test double, with an injected clock (no sleeping)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

from fleet.db import Database
from fleet.sync.service import SyncService
from tests.sync.conftest import VehicleFactory, journal, measurement_count, set_last_sync, vehicle_row
from tests.sync.doubles import FakeClock, FakeVehicle, serve


async def test_first_sync_pulls_the_last_pull_window(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789")
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port)
        async with service_factory(now=clock) as service:
            report = await service.run_cycle(only=[vehicle_id])
    assert [v.status for v in report.vehicles] == ["ok"]
    assert vehicle.windows() == [(clock() - timedelta(seconds=60), clock())]
    row = await vehicle_row(db, vehicle_id)
    assert row["last_sync_at"] == clock()
    assert row["last_seen_at"] == clock()
    assert row["sync_status"] == "online"
    assert row["software_version"] == "9.9.9"
    assert row["sync_lease_owner"] is None and row["sync_failures"] == 0
    # 60 s at one sample per 10 s, three channels
    assert await measurement_count(db, vehicle_id) == 18
    entries = await journal(db, vehicle_id)
    assert [(e["status"], e["rows_written"]) for e in entries] == [("ok", 18)]
    assert entries[0]["window_from"] == clock() - timedelta(seconds=60)
    assert entries[0]["window_to"] == clock()
    async with db.system() as conn:
        channels = await conn.fetch(
            "SELECT channel_id, name, unit, min_value, max_value FROM channel_config WHERE vehicle_id = $1"
            " ORDER BY channel_id",
            vehicle_id,
        )
    assert [tuple(c) for c in channels] == [
        (1, "speed", "km/h", 0.0, 140.0),
        (2, "engine_rpm", "rpm", 0.0, 3000.0),
        (3, "fuel_level", "%", 0.0, 100.0),
    ]


async def test_next_cycle_starts_where_the_last_ended(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789")
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port)
        async with service_factory(now=clock) as service:
            first_end = clock()
            await service.run_cycle(only=[vehicle_id])
            clock.advance(5)
            assert (await service.run_cycle(only=[vehicle_id])).vehicles == []  # not due before the interval
            clock.advance(25)
            await service.run_cycle(only=[vehicle_id])
    assert vehicle.windows()[1] == (first_end, clock())


async def test_a_30_hour_gap_is_pulled_in_hourly_windows(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    gap_start = clock() - timedelta(hours=30)
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789", step_s=600)
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port, last_sync_at=gap_start)
        async with service_factory(now=clock) as service:
            report = await service.run_cycle(only=[vehicle_id])
    windows = vehicle.windows()
    assert len(windows) == 30
    assert all(end - start == timedelta(hours=1) for start, end in windows)
    assert windows[0][0] == gap_start and windows[-1][1] == clock()
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    # one sample per 10 minutes on three channels for 30 hours
    assert report.vehicles[0].rows_written == 30 * 6 * 3 == await measurement_count(db, vehicle_id)
    assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock()
    # alarms are few: they are asked for in windows of up to a day
    assert [end - start for start, end in vehicle.windows("/alarms")] == [
        timedelta(hours=24),
        timedelta(hours=6),
    ]


async def test_a_truncated_answer_continues_in_ten_minute_windows(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService], sync_settings
) -> None:
    clock = FakeClock()
    start = clock() - timedelta(hours=2)
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789", step_s=1)
    settings = sync_settings.model_copy(update={"sync_max_rows_per_request": 3000})
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port, last_sync_at=start)
        async with service_factory(now=clock, settings=settings) as service:
            report = await service.run_cycle(only=[vehicle_id])
    windows = vehicle.windows()
    # The 2-hour window held 21,600 rows: the first page stops after 1,000 seconds (3,000 rows)...
    assert windows[0] == (start, clock())
    resume = start + timedelta(seconds=1000)
    # ...and the rest is asked for in 10-minute windows, each answered whole (1,800 rows).
    assert windows[1:] == [
        (resume + timedelta(minutes=10 * n), min(resume + timedelta(minutes=10 * (n + 1)), clock()))
        for n in range(len(windows) - 1)
    ]
    assert len(windows) == 1 + 11
    assert report.vehicles[0].rows_written == 7200 * 3 == await measurement_count(db, vehicle_id)
    assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock()
    assert [e["status"] for e in await journal(db, vehicle_id)] == ["ok"]


async def test_a_window_clamped_by_the_agent_moves_the_cursor_only_that_far(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789", horizon=clock() - timedelta(seconds=2))
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port)
        async with service_factory(now=clock) as service:
            await service.run_cycle(only=[vehicle_id])
            assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock() - timedelta(seconds=2)
            vehicle.horizon = clock.advance(30) - timedelta(seconds=2)
            await service.run_cycle(only=[vehicle_id])
    first, second = vehicle.windows()
    assert second[0] == first[1] - timedelta(seconds=2)


async def test_duplicates_are_ignored(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key="default-vehicle-key-0123456789")
    async with serve(vehicle) as port:
        vehicle_id = await make_vehicle(port)
        async with service_factory(now=clock) as service:
            await service.run_cycle(only=[vehicle_id])
            await set_last_sync(db, vehicle_id, clock() - timedelta(seconds=60))
            report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "ok"
    assert report.vehicles[0].rows_written == 0
    assert await measurement_count(db, vehicle_id) == 18
    assert [e["rows_written"] for e in await journal(db, vehicle_id)] == [18, 0]


async def test_vehicles_without_an_address_are_skipped(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    vehicle_id = await make_vehicle(None)
    async with service_factory() as service:
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles == []
    assert await journal(db, vehicle_id) == []
