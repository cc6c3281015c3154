"""What docs/DATA_CONTRACT.md asks of the server beyond the seed: versions, limits, retention, alarm halving."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from structlog.testing import capture_logs

from fleet.db import Database
from fleet.sync.parse import format_time, parse_time
from fleet.sync.service import SyncService
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory, journal, measurement_count, vehicle_row
from tests.sync.doubles import FakeClock, FakeVehicle, Reply, json_reply, serve


async def test_an_unknown_major_version_is_not_pulled_but_stays_online(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key=DEFAULT_KEY, status_extra={"contract_version": "2.0"})
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "error"
    assert "contract_version '2.0' is not supported" in (report.vehicles[0].note or "")
    assert [r.path for r in vehicle.requests] == ["/status"]
    row = await vehicle_row(db, vehicle_id)
    assert row["sync_status"] == "error" and row["last_seen_at"] == clock()
    # Tried again next interval (no backoff), so last_seen_at stays current.
    assert row["sync_next_at"] == clock() + timedelta(seconds=29)


async def test_a_failing_vehicle_database_skips_data_but_keeps_channels(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    vehicle = FakeVehicle(api_key=DEFAULT_KEY, status_extra={"db_ok": False})
    async with serve(vehicle) as port, service_factory() as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "error" and "db_ok false" in (report.vehicles[0].note or "")
    assert [r.path for r in vehicle.requests] == ["/status", "/channels"]
    assert (await vehicle_row(db, vehicle_id))["sync_status"] == "error"
    async with db.system() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM channel_config WHERE vehicle_id = $1", vehicle_id) == 3
        )


async def test_the_agents_limits_bound_pages_and_windows(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    since = clock() - timedelta(hours=3)
    vehicle = FakeVehicle(
        api_key=DEFAULT_KEY,
        step_s=60,
        status_extra={"limits": {"row_limit": 100, "max_window_seconds": 1800, "alarm_limit": 10}},
    )
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port, last_sync_at=since)
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "ok"
    data = [r for r in vehicle.requests if r.path == "/data"]
    assert {r.query["limit"] for r in data} == {"100"}
    assert all(end - start <= timedelta(minutes=30) for start, end in vehicle.windows())
    assert all(end - start <= timedelta(minutes=30) for start, end in vehicle.windows("/alarms"))
    assert await measurement_count(db, vehicle_id) == 180 * 3
    assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock()


async def test_a_gap_beyond_the_vehicles_retention_is_reported_once_and_skipped(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    oldest = clock() - timedelta(hours=2)
    vehicle = FakeVehicle(api_key=DEFAULT_KEY, step_s=60, status_extra={"oldest_data": format_time(oldest)})
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port, last_sync_at=clock() - timedelta(days=10))
        with capture_logs() as logs:
            report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "ok"
    assert vehicle.windows() == [(oldest, clock())]
    assert "the vehicle holds nothing before" in (report.vehicles[0].note or "")
    assert [e["event"] for e in logs if e["event"] == "vehicle_data_lost"] == ["vehicle_data_lost"]
    (entry,) = await journal(db, vehicle_id)
    assert entry["window_from"] == oldest and entry["window_to"] == clock()


async def test_truncated_alarms_are_asked_for_again_in_halves(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    raised = [clock() - timedelta(seconds=50 - 10 * n) for n in range(5)]
    alarms = [
        {
            "alarm_id": 100 + n,
            "channel_id": 1,
            "level": "warning",
            "message": f"alarm {n}",
            "raised_at": format_time(t),
            "resolved_at": None,
        }
        for n, t in enumerate(raised)
    ]
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)

    async def two_at_most(query: dict[str, str]) -> Reply:
        start, end = parse_time(query["from"]), parse_time(query["to"])
        assert start is not None and end is not None
        inside = [a for a, t in zip(alarms, raised, strict=True) if start <= t < end]
        return json_reply(
            {"from": query["from"], "to": query["to"], "alarms": inside[:2], "truncated": len(inside) > 2}
        )

    vehicle.overrides["/alarms"] = two_at_most
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "ok"
    windows = vehicle.windows("/alarms")
    assert windows[0] == (clock() - timedelta(seconds=60), clock())
    assert windows[1] == (clock() - timedelta(seconds=60), clock() - timedelta(seconds=30))
    async with db.system() as conn:
        stored = await conn.fetch(
            "SELECT alarm_id FROM alarms_log WHERE vehicle_id = $1 ORDER BY 1", vehicle_id
        )
    assert [r[0] for r in stored] == [100, 101, 102, 103, 104]
    assert (await vehicle_row(db, vehicle_id))["alarms_synced_at"] == clock()
