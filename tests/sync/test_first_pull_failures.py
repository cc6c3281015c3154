"""A new vehicle whose first `/channels` or `/alarms` request fails loses nothing (issue 15, sync defects).

Both were found by an independent mock of the Outbound API written from docs/DATA_CONTRACT.md: with `/channels`
failing, a new vehicle's rows were dropped ("no channel list"); with the first `/alarms` failing, the alarm
pull later started at the already advanced data cursor, so an alarm raised and resolved in that first window
never reached `alarms_log`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fleet.db import Database
from fleet.sync.parse import format_time
from fleet.sync.service import SyncService
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory, journal, measurement_count, vehicle_row
from tests.sync.doubles import FakeClock, FakeVehicle, Reply, serve


def _fail(status: int = 500) -> Callable[[dict[str, str]], Any]:
    async def handler(query: dict[str, str]) -> Reply:
        body = json.dumps({"error": {"code": "internal", "message": "logger database busy"}}).encode()
        return status, body, {"content-type": "application/json"}

    return handler


async def test_channels_failing_for_a_new_vehicle_still_stores_its_rows(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    vehicle.overrides["/channels"] = _fail()
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
        # Not fatal (seed 003 step 2, contract §8): the rows of the window are stored, the cursor moves.
        assert report.vehicles[0].status == "ok", report.vehicles[0].note
        assert "channels: HTTP 500" in (report.vehicles[0].note or "")
        assert await measurement_count(db, vehicle_id) == 18  # 6 samples x 3 channels in 60 s
        assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock()

        # The channels are learnt as soon as /channels answers.
        del vehicle.overrides["/channels"]
        clock.advance(30)
        report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "ok", report.vehicles[0].note
    async with db.system() as conn:
        names = await conn.fetch(
            "SELECT name FROM channel_config WHERE vehicle_id = $1 ORDER BY channel_id", vehicle_id
        )
    assert [r["name"] for r in names] == ["speed", "engine_rpm", "fuel_level"]
    assert await measurement_count(db, vehicle_id) == 27


async def test_alarms_of_a_failed_first_alarm_pull_are_asked_for_again(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    first_start = clock() - timedelta(seconds=60)
    raised = clock() - timedelta(seconds=40)
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    # Raised and resolved inside the first cycle's window: only a pull covering that window can see it.
    vehicle.alarms = [
        {
            "alarm_id": 7,
            "channel_id": 1,
            "level": "critical",
            "message": "overspeed",
            "raised_at": format_time(raised),
            "resolved_at": format_time(raised + timedelta(seconds=5)),
        }
    ]
    vehicle.overrides["/alarms"] = _fail()
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
        assert report.vehicles[0].status == "ok"
        assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == clock()  # data moved on

        del vehicle.overrides["/alarms"]
        clock.advance(30)
        report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "ok", report.vehicles[0].note
    windows = vehicle.windows("/alarms")
    assert windows[-1][0] == first_start  # the failed range is asked for again
    async with db.system() as conn:
        stored = await conn.fetch(
            "SELECT alarm_id, resolved_at FROM alarms_log WHERE vehicle_id = $1", vehicle_id
        )
    assert [(r["alarm_id"], r["resolved_at"] is not None) for r in stored] == [(7, True)]
    assert (await vehicle_row(db, vehicle_id))["alarms_synced_at"] == clock()
    assert len(await journal(db, vehicle_id)) == 2
