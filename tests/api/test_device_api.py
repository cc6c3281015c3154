"""The seed-000 device API: v1 (deprecated headers), v2, README aliases; IMEI or id; static API key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleet.config import Settings
from fleet.db import Database

from .conftest import Account, Fleet, LiveServer, add_positions, make_account, make_fleet


@pytest.fixture(scope="module")
async def tracker(db: Database, api_settings: Settings) -> Fleet:
    fleet = await make_fleet(db, await make_account(db, api_settings))
    now = datetime.now(UTC)
    await add_positions(db, fleet, now - timedelta(minutes=10), 30, step=timedelta(seconds=10))
    async with db.system() as conn:
        await conn.executemany(
            """INSERT INTO can_data (device_id, vehicle_id, time, record_index, signals)
               VALUES ($1, $2, $3, $4, $5)""",
            [
                (
                    fleet.device_id,
                    fleet.vehicle_id,
                    now - timedelta(minutes=m),
                    m,
                    [
                        {"name": name, "value": value + m, "unit": unit, "source": "j1939:61444"}
                        for name, value, unit in (("engine_speed", 900.0, "rpm"), ("fuel_level", 50.0, "%"))
                    ],
                )
                for m in range(3)
            ],
        )
        await conn.executemany(
            """INSERT INTO raw_frames (device_id, vehicle_id, received_at, frame_type, data, outcome, error)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (fleet.device_id, fleet.vehicle_id, now - timedelta(seconds=5), "~A", b"~A123~", "ok", None),
                (
                    fleet.device_id,
                    fleet.vehicle_id,
                    now - timedelta(seconds=1),
                    "flex",
                    b"\x7e\x41",
                    "error",
                    "crc",
                ),
            ],
        )
    return fleet


def static_key(settings: Settings) -> dict[str, str]:
    assert settings.api_key is not None
    return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}


async def test_v1_is_deprecated_v2_is_not(http: httpx.AsyncClient, tracker: Fleet) -> None:
    for path in (
        "/api/v1/health",
        "/api/v1/devices",
        f"/api/v1/devices/{tracker.imei}/telemetry",
        f"/api/v1/devices/{tracker.imei}/raw-frames",
    ):
        response = await http.get(path, headers=tracker.owner.headers)
        assert response.status_code == 200, path
        assert response.headers["deprecation"].startswith("@")
        assert response.headers["sunset"].endswith("GMT")
        assert "successor-version" in response.headers["link"]
    refused = await http.get("/api/v1/devices")  # errors of v1 are deprecated answers too
    assert refused.status_code == 401 and "deprecation" in refused.headers
    v2 = await http.get("/api/v2/devices", headers=tracker.owner.headers)
    assert "deprecation" not in v2.headers
    health = (await http.get("/api/v2/health")).json()
    assert health["status"] == "ok" and health["api_version"] == "v2"


async def test_telemetry_by_imei_and_by_id(http: httpx.AsyncClient, tracker: Fleet) -> None:
    by_imei = (
        await http.get(f"/api/v2/devices/{tracker.imei}/telemetry", headers=tracker.owner.headers)
    ).json()
    by_id = (
        await http.get(f"/api/v2/devices/{tracker.device_id}/telemetry", headers=tracker.owner.headers)
    ).json()
    assert by_imei == by_id
    assert by_imei["total"] == 30 and by_imei["device_id"] == tracker.device_id
    times = [p["time"] for p in by_imei["items"]]
    assert times == sorted(times, reverse=True)
    oldest_first = (
        await http.get(
            f"/api/v2/devices/{tracker.imei}/telemetry",
            params={"order": "asc", "limit": 5},
            headers=tracker.owner.headers,
        )
    ).json()
    assert oldest_first["items"][0]["time"] == times[-1] and oldest_first["has_more"] is True
    assert (
        await http.get("/api/v2/devices/000000000000000/telemetry", headers=tracker.owner.headers)
    ).status_code == 404


async def test_can_data_raw_frames_and_aliases(http: httpx.AsyncClient, tracker: Fleet) -> None:
    headers = tracker.owner.headers
    can = (await http.get(f"/api/v2/devices/{tracker.imei}/can-data", headers=headers)).json()
    assert can["total"] == 6
    rpm = (
        await http.get(
            f"/api/v2/devices/{tracker.imei}/can-data", params={"name": "engine_speed"}, headers=headers
        )
    ).json()
    assert [c["value"] for c in rpm["items"]] == [900.0, 901.0, 902.0]

    frames = (await http.get(f"/api/v2/devices/{tracker.imei}/raw-frames", headers=headers)).json()
    assert [f["data_hex"] for f in frames["items"]] == ["7e41", "7e413132337e"]
    errors_only = (await http.get("/api/v2/raw-frames", params={"outcome": "error"}, headers=headers)).json()
    assert [f["error"] for f in errors_only["items"]] == ["crc"]

    last = (await http.get(f"/api/devices/{tracker.imei}/last", headers=headers)).json()
    assert last["device"] == {"id": tracker.device_id, "imei": tracker.imei}
    assert last["position"]["latitude"] == pytest.approx(50.0029)
    assert {c["name"]: c["value"] for c in last["can"]} == {"engine_speed": 900.0, "fuel_level": 50.0}
    alias_can = (await http.get(f"/api/devices/{tracker.imei}/can", headers=headers)).json()
    assert alias_can["total"] == 6
    listed = (await http.get("/api/devices", headers=headers)).json()
    assert [d["imei"] for d in listed["items"]] == [tracker.imei]


async def test_stats_with_live_ingest_figures(
    live_api: LiveServer, http: httpx.AsyncClient, tracker: Fleet, api_settings: Settings
) -> None:
    runtime = live_api.server.config.app.state.api.runtime
    runtime.extras["ingest_stats"] = lambda: {"connections": 3, "frames_total": 42}
    try:
        stats = (await http.get("/api/v2/stats", headers=static_key(api_settings))).json()
    finally:
        del runtime.extras["ingest_stats"]
    assert stats["ingest"] == {"connections": 3, "frames_total": 42}
    assert stats["devices"] >= 1 and stats["positions_24h"] >= 30
    owner_stats = (await http.get("/api/v2/stats", headers=tracker.owner.headers)).json()
    assert owner_stats["devices"] == 1 and owner_stats["raw_frame_errors_24h"] == 1
    assert owner_stats["ingest"] is None


async def test_static_api_key_sees_unassigned_devices(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    async with db.system() as conn:
        orphan = await conn.fetchrow(
            "INSERT INTO devices (imei) VALUES ($1) RETURNING id, imei", "ORPHAN" + str(id(db))[-8:]
        )
    found = await http.get(f"/api/v2/devices/{orphan['imei']}/telemetry", headers=static_key(api_settings))
    assert found.status_code == 200
    assert (
        await http.get(f"/api/v2/devices/{orphan['id']}/raw-frames", headers=admin.headers)
    ).status_code == 200
    wrong = await http.get("/api/v2/devices", headers={"Authorization": "Bearer wrong-key"})
    assert wrong.status_code == 401
