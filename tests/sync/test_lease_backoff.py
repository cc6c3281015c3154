"""Several workers share the fleet through leases; failing vehicles are tried less often and logged once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from fleet.config import Settings
from fleet.db import Database
from fleet.sync.service import SyncService
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory, journal, vehicle_row
from tests.sync.doubles import FakeClock, FakeVehicle, Reply, serve, serve_many


def _slow_status(vehicle: FakeVehicle, delay: float) -> Callable[[dict[str, str]], Any]:
    async def handler(query: dict[str, str]) -> Reply:
        await asyncio.sleep(delay)
        return vehicle.answer("/status", query)

    return handler


async def test_two_workers_never_pull_the_same_vehicle(
    db: Database,
    make_vehicle: VehicleFactory,
    service_factory: Callable[..., SyncService],
    sync_settings: Settings,
) -> None:
    vehicles = [FakeVehicle(api_key=DEFAULT_KEY) for _ in range(8)]
    for vehicle in vehicles:  # slow answers keep both workers busy at the same time
        vehicle.overrides["/status"] = _slow_status(vehicle, 0.1)
    settings = sync_settings.model_copy(update={"sync_concurrency": 2})
    clock = FakeClock()
    async with serve_many(vehicles) as ports:
        ids = [await make_vehicle(port) for port in ports]
        async with (
            service_factory(now=clock, settings=settings, owner="worker-a") as a,
            service_factory(now=clock, settings=settings, owner="worker-b") as b,
        ):
            first, second = await asyncio.gather(a.run_cycle(only=ids), b.run_cycle(only=ids))
    pulled_a = {v.vehicle_id for v in first.vehicles}
    pulled_b = {v.vehicle_id for v in second.vehicles}
    assert not pulled_a & pulled_b
    assert pulled_a | pulled_b == set(ids)
    for vehicle, vehicle_id in zip(vehicles, ids, strict=True):
        assert vehicle.count("/status") == 1
        assert vehicle.max_in_flight == 1
        assert [e["status"] for e in await journal(db, vehicle_id)] == ["ok"]
        assert (await vehicle_row(db, vehicle_id))["sync_lease_owner"] is None


async def test_a_leased_vehicle_is_left_alone_until_the_lease_expires(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    async with serve(vehicle) as port, service_factory() as service:
        vehicle_id = await make_vehicle(port)
        async with db.system() as conn:
            await conn.execute(
                "UPDATE vehicles SET sync_lease_owner = 'elsewhere', sync_lease_until = now() + interval '1 minute'"
                " WHERE id = $1",
                vehicle_id,
            )
        assert (await service.run_cycle(only=[vehicle_id], force=True)).vehicles == []
        async with db.system() as conn:
            await conn.execute(
                "UPDATE vehicles SET sync_lease_until = now() - interval '1 second' WHERE id = $1", vehicle_id
            )
        report = await service.run_cycle(only=[vehicle_id], force=True)
    assert [v.status for v in report.vehicles] == ["ok"]
    assert vehicle.count("/status") == 1


async def test_a_worker_that_lost_its_lease_does_not_move_the_cursor(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    vehicle_id = 0

    async def taken_over(query: dict[str, str]) -> Reply:
        # Another worker claims the vehicle while this one is still pulling (its lease ran out).
        async with db.system() as conn:
            await conn.execute("UPDATE vehicles SET sync_lease_owner = 'intruder' WHERE id = $1", vehicle_id)
        return vehicle.answer("/data", query)

    vehicle.overrides["/data"] = taken_over
    async with serve(vehicle) as port, service_factory() as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
    assert report.vehicles[0].status == "error"
    assert "lease" in (report.vehicles[0].note or "")
    row = await vehicle_row(db, vehicle_id)
    assert row["last_sync_at"] is None
    assert row["sync_lease_owner"] == "intruder"  # the other worker's claim is untouched
    (entry,) = await journal(db, vehicle_id)
    assert entry["status"] == "error" and "lease" in entry["error"]


async def test_a_vehicle_that_keeps_timing_out_backs_off_and_logs_once(
    db: Database,
    make_vehicle: VehicleFactory,
    service_factory: Callable[..., SyncService],
    sync_settings: Settings,
) -> None:
    # The timeout leaves room for a healthy answer on a loaded machine; the slow answer is far beyond it.
    settings = sync_settings.model_copy(update={"pull_timeout_sec": 0.6})
    clock = FakeClock()
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    vehicle.overrides["/status"] = _slow_status(vehicle, 5.0)
    async with serve(vehicle) as port, service_factory(now=clock, settings=settings) as service:
        vehicle_id = await make_vehicle(port)
        with capture_logs() as failing_logs:
            attempts = []
            for _ in range(8):  # 8 cycles of 30 s
                report = await service.run_cycle(only=[vehicle_id])
                if report.vehicles:
                    attempts.append(clock())
                clock.advance(30)
        row = await vehicle_row(db, vehicle_id)
        # Attempts at 0, 30, 90, 210 s: the wait doubles after every failure past the first.
        start = attempts[0]
        assert [(t - start).total_seconds() for t in attempts] == [0, 30, 90, 210]
        assert row["sync_failures"] == 4
        assert row["sync_status"] == "offline"
        assert row["sync_next_at"] - attempts[-1] == timedelta(seconds=240 - 1)
        assert [e["status"] for e in await journal(db, vehicle_id)] == ["timeout"] * 4
        failing = [e for e in failing_logs if e["event"] == "vehicle_sync_failing"]
        assert (
            len(failing) == 1 and failing[0]["vehicle_id"] == vehicle_id and failing[0]["status"] == "timeout"
        )

        del vehicle.overrides["/status"]
        clock.value = row["sync_next_at"]
        with capture_logs() as recovery_logs:
            report = await service.run_cycle(only=[vehicle_id])
            clock.advance(30)
            await service.run_cycle(only=[vehicle_id])
    assert [v.status for v in report.vehicles] == ["ok"]
    row = await vehicle_row(db, vehicle_id)
    assert row["sync_failures"] == 0 and row["sync_status"] == "online"
    recovered = [e for e in recovery_logs if e["event"] == "vehicle_sync_recovered"]
    assert len(recovered) == 1 and recovered[0]["failed_cycles"] == 4
    assert not [e for e in recovery_logs if e["event"] == "vehicle_sync_failing"]


async def test_a_claim_that_expired_while_waiting_for_a_slot_is_not_pulled(
    db: Database,
    make_vehicle: VehicleFactory,
    service_factory: Callable[..., SyncService],
    sync_settings: Settings,
) -> None:
    settings = sync_settings.model_copy(update={"sync_concurrency": 2, "sync_lease_sec": 0.6})
    slow = [FakeVehicle(api_key=DEFAULT_KEY) for _ in range(2)]
    waiting = FakeVehicle(api_key=DEFAULT_KEY)
    waiting_id = 0

    async def slow_status(query: dict[str, str]) -> Reply:
        # While the first two vehicles are pulled, another worker takes over the third one's claim.
        async with db.system() as conn:
            await conn.execute("UPDATE vehicles SET sync_lease_owner = 'intruder' WHERE id = $1", waiting_id)
        await asyncio.sleep(0.5)
        return slow[0].answer("/status", query)

    for vehicle in slow:
        vehicle.overrides["/status"] = slow_status
    async with serve_many([*slow, waiting]) as ports:
        ids = [await make_vehicle(port) for port in ports]
        waiting_id = ids[2]
        async with service_factory(settings=settings) as service:
            report = await service.run_cycle(only=ids)
    assert sorted(v.vehicle_id for v in report.vehicles) == ids[:2]
    assert waiting.requests == []
    assert await journal(db, waiting_id) == []
