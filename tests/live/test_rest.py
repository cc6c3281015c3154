"""REST of the live view: `/vehicles/latest-positions` (kept by the database), tracker events and alarms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleet.db import Database
from fleet.db.queries.vehicles import attach_device, create_vehicle
from tests.api.conftest import Account, add_positions, make_fleet, unique, unique_imei
from tests.live.conftest import LiveWsServer


@pytest.fixture
async def http(live_server: LiveWsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


async def _latest(http: httpx.AsyncClient, account: Account) -> dict[int, dict]:
    response = await http.get("/vehicles/latest-positions", headers=account.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return {item["vehicle_id"]: item for item in body["items"]}


async def test_latest_positions_follow_every_writer_and_respect_tenancy(
    http: httpx.AsyncClient, db: Database, owner: Account, other_owner: Account, admin_account: Account
) -> None:
    fleet = await make_fleet(db, owner)
    theirs = await make_fleet(db, other_owner)
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    await add_positions(db, fleet, start, 5)
    await add_positions(db, theirs, start, 2)

    mine = await _latest(http, owner)
    assert set(mine) == {fleet.vehicle_id}  # RLS: never another owner's vehicle
    item = mine[fleet.vehicle_id]
    assert item["time"] == "2026-11-01T08:00:04Z"
    assert item["latitude"] == pytest.approx(50.0004) and item["speed"] == 4.0
    assert set(item) == {"vehicle_id", "time", "latitude", "longitude", "speed", "course"}

    # An older position arriving late (a black box emptied after an outage) does not replace the newest.
    async with db.system() as conn:
        await conn.execute(
            """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, latitude, longitude)
               VALUES ($1, $2, 999, $3, 1.0, 1.0)""",
            fleet.device_id,
            fleet.vehicle_id,
            start - timedelta(days=1),
        )
    assert (await _latest(http, owner))[fleet.vehicle_id]["latitude"] == pytest.approx(50.0004)

    # A tracker that sent while unassigned: its history joins the vehicle on attach, and so does its last fix.
    imei = unique_imei()
    async with db.system() as conn:
        device = await conn.fetchval("INSERT INTO devices (imei) VALUES ($1) RETURNING id", imei)
        await conn.execute(
            """INSERT INTO positions (device_id, record_index, device_time, latitude, longitude)
               VALUES ($1, 1, $2, 48.5, 35.0)""",
            device,
            start,
        )
        vehicle = await create_vehicle(conn, name=unique("late"))
        await conn.execute(
            "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", owner.id, vehicle["id"]
        )
        await attach_device(conn, imei=imei, vehicle_id=vehicle["id"])
    mine = await _latest(http, owner)
    assert mine[vehicle["id"]]["latitude"] == 48.5

    everything = await _latest(http, admin_account)
    assert {fleet.vehicle_id, theirs.vehicle_id, vehicle["id"]} <= set(everything)


async def test_latest_positions_use_the_last_position_table(db: Database) -> None:
    """One index lookup per visible vehicle, never a scan of `positions` (checked on the plan)."""
    async with db.system() as conn:
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT vehicle_id, time FROM vehicle_last_positions ORDER BY vehicle_id"
        )
    text = json.dumps(plan)
    assert "vehicle_last_positions" in text and '"positions"' not in text


async def _tracker_events(db: Database, fleet_device: int, vehicle_id: int, at: datetime) -> None:
    async with db.system() as conn:
        await conn.execute(
            """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, latitude, longitude, speed)
               VALUES ($1, $2, 77, $3, 49.99, 36.23, 12.5)""",
            fleet_device,
            vehicle_id,
            at,
        )
        await conn.executemany(
            """INSERT INTO events (device_id, vehicle_id, time, event_code, event_type, description, record_index,
                                   attributes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            [
                (fleet_device, vehicle_id, at, 0x1234, "alarm", None, 77, {"frame": "T", "event_index": 5}),
                (
                    fleet_device,
                    vehicle_id,
                    at + timedelta(seconds=1),
                    0x10,
                    "extra",
                    None,
                    78,
                    {
                        "frame": "E",
                        "latitude": 50.5,
                        "longitude": 30.5,
                        "items": [{"type": 1, "value": "card"}],
                    },
                ),
                (fleet_device, vehicle_id, at + timedelta(seconds=2), 3, "text", "door open", -1, {}),
            ],
        )


async def test_events_of_a_vehicle_and_of_a_device(
    http: httpx.AsyncClient, db: Database, owner: Account, other_owner: Account
) -> None:
    fleet = await make_fleet(db, owner)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    await _tracker_events(db, fleet.device_id, fleet.vehicle_id, at)

    response = await http.get(f"/vehicles/{fleet.vehicle_id}/events", headers=owner.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 3 and not page["has_more"] and page["vehicle_id"] == fleet.vehicle_id
    text, extra, alarm = page["items"]  # newest first
    assert (text["kind"], text["description"], text["code"]) == ("text", "door open", 3)
    assert (extra["kind"], extra["latitude"], extra["longitude"]) == ("extra", 50.5, 30.5)
    assert extra["details"]["items"] == [{"type": 1, "value": "card"}]
    assert (alarm["kind"], alarm["code"], alarm["record_index"]) == ("alarm", 0x1234, 77)
    assert (alarm["latitude"], alarm["longitude"], alarm["speed"]) == (49.99, 36.23, 12.5)  # the alarm's fix

    oldest_first = await http.get(
        f"/vehicles/{fleet.vehicle_id}/events",
        params={"order": "asc", "kind": "alarm"},
        headers=owner.headers,
    )
    assert [e["kind"] for e in oldest_first.json()["items"]] == ["alarm"]
    paged = await http.get(
        f"/vehicles/{fleet.vehicle_id}/events", params={"limit": 1, "offset": 1}, headers=owner.headers
    )
    assert (
        paged.json()["total"] == 3
        and paged.json()["has_more"]
        and paged.json()["items"][0]["kind"] == "extra"
    )
    narrow = await http.get(
        f"/vehicles/{fleet.vehicle_id}/events",
        params={
            "from": (at + timedelta(seconds=1)).isoformat(),
            "to": (at + timedelta(seconds=2)).isoformat(),
        },
        headers=owner.headers,
    )
    assert [e["kind"] for e in narrow.json()["items"]] == ["extra"]

    for ref in (fleet.imei, str(fleet.device_id)):
        by_device = await http.get(f"/api/v2/devices/{ref}/events", headers=owner.headers)
        assert by_device.status_code == 200 and by_device.json()["total"] == 3
        assert by_device.json()["device_id"] == fleet.device_id

    # Another owner learns nothing, not even that the vehicle or the tracker exists.
    for path in (
        f"/vehicles/{fleet.vehicle_id}/events",
        f"/api/v2/devices/{fleet.imei}/events",
        f"/vehicles/{fleet.vehicle_id}/alarms",
    ):
        refused = await http.get(path, headers=other_owner.headers)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


async def test_alarms_come_from_both_sources(http: httpx.AsyncClient, db: Database, owner: Account) -> None:
    fleet = await make_fleet(db, owner)
    now = datetime.now(UTC).replace(microsecond=0)
    await _tracker_events(db, fleet.device_id, fleet.vehicle_id, now - timedelta(minutes=10))
    async with db.system() as conn:
        await conn.execute(  # an old tracker alarm: no longer active
            """INSERT INTO events (device_id, vehicle_id, time, event_code, event_type, record_index)
               VALUES ($1, $2, $3, 9, 'alarm', 5)""",
            fleet.device_id,
            fleet.vehicle_id,
            now - timedelta(days=2),
        )
        await conn.executemany(
            """INSERT INTO alarms_log (vehicle_id, alarm_id, channel_id, level, message, raised_at, resolved_at)
               VALUES ($1, $2, 3, 'warning', $3, $4, $5)""",
            [
                (fleet.vehicle_id, 1, "Coolant hot", now - timedelta(minutes=20), None),
                (fleet.vehicle_id, 2, "Low fuel", now - timedelta(hours=3), now - timedelta(hours=2)),
            ],
        )

    active = (await http.get(f"/vehicles/{fleet.vehicle_id}/alarms", headers=owner.headers)).json()
    assert active["active_only"] and active["tracker_alarm_active_sec"] == 3600
    assert [(a["source"], a["active"]) for a in active["items"]] == [("tracker", True), ("vehicle", True)]
    tracker, vehicle = active["items"]
    assert (
        tracker["code"] == 0x1234 and tracker["device_id"] == fleet.device_id and tracker["latitude"] == 49.99
    )
    assert tracker["alarm_id"] is None and tracker["message"] == "tracker alarm, event code 4660"
    assert vehicle["alarm_id"] == 1 and vehicle["message"] == "Coolant hot" and vehicle["device_id"] is None

    everything = (await http.get(f"/vehicles/{fleet.vehicle_id}/alarms?all=1", headers=owner.headers)).json()
    assert everything["total"] == 4
    assert [(a["source"], a["active"]) for a in everything["items"]] == [
        ("tracker", True),
        ("vehicle", True),
        ("vehicle", False),
        ("tracker", False),
    ]
