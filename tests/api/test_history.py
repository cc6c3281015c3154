"""Vehicle status, alarms and history: time ranges, pagination, downsampling, CSV and GPX."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleet.config import Settings
from fleet.db import Database

from .conftest import Fleet, add_positions, make_account, make_fleet

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def tracked(db: Database, api_settings: Settings) -> Fleet:
    fleet = await make_fleet(db, await make_account(db, api_settings), name="Tanker <A&B>")
    await add_positions(db, fleet, T0, 600)  # ten minutes at 1 Hz
    async with db.system() as conn:
        await conn.executemany(
            "INSERT INTO measurements (vehicle_id, channel_id, time, value) VALUES ($1, $2, $3, $4)",
            [
                (fleet.vehicle_id, ch, T0 + timedelta(seconds=s), float(s * ch))
                for ch in (1, 2)
                for s in range(120)
            ],
        )
        await conn.execute(
            """INSERT INTO channel_config (vehicle_id, channel_id, name, unit) VALUES ($1, 1, 'coolant', 'C'),
               ($1, 2, 'rpm', '1/min')""",
            fleet.vehicle_id,
        )
        await conn.execute(
            """INSERT INTO alarms_log (vehicle_id, alarm_id, level, message, raised_at, resolved_at) VALUES
               ($1, 10, 'critical', 'overheat', $2, NULL), ($1, 11, 'warning', 'door', $2, $2 + interval '1 min')""",
            fleet.vehicle_id,
            T0,
        )
    return fleet


def span(minutes: int = 10) -> dict[str, str]:
    return {"from": T0.isoformat(), "to": (T0 + timedelta(minutes=minutes)).isoformat()}


async def test_positions_json_range_and_pagination(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/positions"
    full = (await http.get(url, params=span(), headers=tracked.owner.headers)).json()
    assert full["total"] == 600 and len(full["items"]) == 600 and full["has_more"] is False
    first = full["items"][0]
    assert first["time"] == "2026-03-10T12:00:00Z" and first["latitude"] == 50.0
    assert first["device_id"] == tracked.device_id
    assert [p["time"] for p in full["items"]] == sorted(p["time"] for p in full["items"])

    page = (
        await http.get(url, params={**span(), "limit": 100, "offset": 550}, headers=tracked.owner.headers)
    ).json()
    assert (page["total"], len(page["items"]), page["has_more"]) == (600, 50, False)
    page = (
        await http.get(url, params={**span(), "limit": 100, "offset": 100}, headers=tracked.owner.headers)
    ).json()
    assert (page["total"], len(page["items"]), page["has_more"]) == (600, 100, True)
    assert page["items"][0]["time"] == "2026-03-10T12:01:40Z"
    beyond = (await http.get(url, params={**span(), "offset": 5000}, headers=tracked.owner.headers)).json()
    assert beyond["items"] == [] and beyond["total"] == 600

    minute = (await http.get(url, params=span(1), headers=tracked.owner.headers)).json()
    assert minute["total"] == 60
    default_range = (await http.get(url, headers=tracked.owner.headers)).json()
    assert default_range["total"] == 0  # the last 24 hours hold nothing of 2026-03-10


async def test_positions_downsampled(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/positions"
    body = (await http.get(url, params={**span(), "bucket": "1m"}, headers=tracked.owner.headers)).json()
    assert body["total"] == 10 and body["bucket_sec"] == 60
    first = body["items"][0]
    assert first["points"] == 60 and first["time"] == "2026-03-10T12:00:00Z"
    assert first["speed"] == pytest.approx(29.5) and first["max_speed"] == 59
    assert first["latitude"] == pytest.approx(50.0 + 29.5e-4)
    for bad in ("1x", "0s", "40d", "-1m", "m"):
        response = await http.get(url, params={"bucket": bad}, headers=tracked.owner.headers)
        assert response.status_code == 400, bad


async def test_positions_csv_and_gpx(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/positions"
    response = await http.get(url, params={**span(), "format": "csv"}, headers=tracked.owner.headers)
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 600 and rows[0]["time"] == "2026-03-10T12:00:00Z" and rows[0]["valid"] == "t"

    response = await http.get(
        url, params={**span(), "format": "gpx", "limit": 10}, headers=tracked.owner.headers
    )
    assert response.headers["content-type"].startswith("application/gpx+xml")
    root = ET.fromstring(response.content)
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    assert root.find("g:trk/g:name", ns).text == "Tanker <A&B>"  # type: ignore[union-attr]
    points = root.findall("g:trk/g:trkseg/g:trkpt", ns)
    assert len(points) == 10
    assert points[1].get("lat") == "50.0001" and points[1].find("g:time", ns).text == "2026-03-10T12:00:01Z"  # type: ignore[union-attr]
    bad = await http.get(url, params={"format": "gpx", "bucket": "1m"}, headers=tracked.owner.headers)
    assert bad.status_code == 400


async def test_measurements_channels_and_buckets(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/measurements"
    both = (await http.get(url, params=span(), headers=tracked.owner.headers)).json()
    assert both["total"] == 240 and [c["name"] for c in both["channels"]] == ["coolant", "rpm"]
    rpm = (await http.get(url, params={**span(), "channel": 2}, headers=tracked.owner.headers)).json()
    assert rpm["total"] == 120 and {m["channel_id"] for m in rpm["items"]} == {2}
    assert rpm["items"][3] == {"channel_id": 2, "time": "2026-03-10T12:00:03Z", "value": 6.0}
    binned = (
        await http.get(url, params={**span(), "channel": 1, "bucket": "1m"}, headers=tracked.owner.headers)
    ).json()
    assert binned["total"] == 2
    assert binned["items"][0] == {
        "channel_id": 1,
        "time": "2026-03-10T12:00:00Z",
        "value": 29.5,
        "min": 0.0,
        "max": 59.0,
        "points": 60,
    }
    several = await http.get(
        url, params=[*span().items(), ("channel", 1), ("channel", 2)], headers=tracked.owner.headers
    )
    assert several.json()["total"] == 240


async def test_alarms_active_and_all(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/alarms"
    active = (await http.get(url, headers=tracked.owner.headers)).json()
    assert [a["alarm_id"] for a in active["items"]] == [10] and active["active_only"] is True
    everything = (await http.get(url, params={"all": 1}, headers=tracked.owner.headers)).json()
    assert sorted(a["alarm_id"] for a in everything["items"]) == [10, 11] and everything["total"] == 2


async def test_status_online_offline_unknown(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, tracked: Fleet
) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/status"
    body = (await http.get(url, headers=tracked.owner.headers)).json()
    assert body["status"] == "unknown" and body["online_window_sec"] == 3 * api_settings.sync_interval_sec
    assert body["last_position"]["time"] == "2026-03-10T12:09:59Z"
    async with db.system() as conn:
        await conn.execute(
            "UPDATE devices SET last_seen_at = now() - interval '10 minutes' WHERE id = $1", tracked.device_id
        )
    assert (await http.get(url, headers=tracked.owner.headers)).json()["status"] == "offline"
    async with db.system() as conn:
        await conn.execute(
            "UPDATE vehicles SET last_seen_at = now() - interval '5 seconds' WHERE id = $1",
            tracked.vehicle_id,
        )
    body = (await http.get(url, headers=tracked.owner.headers)).json()
    assert body["status"] == "online" and body["vehicle"]["status"] == "online"
    listed = (await http.get("/vehicles", headers=tracked.owner.headers)).json()
    assert listed["items"][0]["status"] == "online"
    async with db.system() as conn:
        await conn.execute("UPDATE vehicles SET last_seen_at = NULL WHERE id = $1", tracked.vehicle_id)
        await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = $1", tracked.device_id)
    assert (await http.get(url, headers=tracked.owner.headers)).json()["status"] == "online"


async def test_bad_ranges(http: httpx.AsyncClient, tracked: Fleet) -> None:
    url = f"/vehicles/{tracked.vehicle_id}/positions"
    reversed_range = {"from": (T0 + timedelta(hours=1)).isoformat(), "to": T0.isoformat()}
    for params in (reversed_range, {"from": "yesterday"}, {"limit": 100_001}, {"limit": 0}, {"offset": -1}):
        response = await http.get(url, params=params, headers=tracked.owner.headers)
        assert response.status_code in (400, 422), params
        assert set(response.json()["error"]) == {"code", "message"}
    assert (
        await http.get("/vehicles", params={"limit": 1001}, headers=tracked.owner.headers)
    ).status_code == 422
    # The caller is checked before the parameters: no token and a bad page is a 401, not a 422.
    assert (await http.get("/vehicles", params={"limit": 0})).status_code == 401
