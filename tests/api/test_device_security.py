"""Device-port security over the API (issue 15): security events for superusers, per-device allow-lists."""

from __future__ import annotations

import httpx

from fleet.config import Settings
from fleet.db import Database

from .conftest import Account, make_account, unique_imei
from .test_management import last_audit


async def test_security_events_are_for_superusers(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    imei = unique_imei()
    async with db.system() as conn:
        device_id = await conn.fetchval("INSERT INTO devices (imei) VALUES ($1) RETURNING id", imei)
        await conn.execute(
            """INSERT INTO security_events (kind, first_at, last_at, count, device_id, imei, protocol, peer,
                                            details)
               VALUES ('takeover_refused', now() - interval '3 seconds', now(), 4, $1, $2, 'teltonika',
                       '203.0.113.9:40312', '{"address": "203.0.113.9", "online_peer": "198.51.100.7:5000"}'),
                      ('device_address_refused', now(), now(), 1, $1, $2, 'teltonika', '192.0.2.1:1', '{}')""",
            device_id,
            imei,
        )
    page = await http.get(
        "/admin/security-events", params={"imei": imei, "kind": "takeover_refused"}, headers=admin.headers
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 1 and not body["has_more"]
    (event,) = body["items"]
    assert event["kind"] == "takeover_refused" and event["count"] == 4 and event["device_id"] == device_id
    assert event["peer"] == "203.0.113.9:40312" and event["details"]["online_peer"] == "198.51.100.7:5000"
    both = (
        await http.get("/admin/security-events", params={"device_id": device_id}, headers=admin.headers)
    ).json()
    assert {e["kind"] for e in both["items"]} == {"takeover_refused", "device_address_refused"}

    owner = await make_account(db, api_settings)
    assert (await http.get("/admin/security-events", headers=owner.headers)).status_code == 403
    assert (await http.get("/admin/security-events")).status_code == 401
    bad = await http.get("/admin/security-events", params={"kind": "nonsense"}, headers=admin.headers)
    assert bad.status_code == 422


async def test_per_device_allowed_networks(http: httpx.AsyncClient, db: Database, admin: Account) -> None:
    created = await http.post("/admin/devices", json={"imei": unique_imei()}, headers=admin.headers)
    device_id = created.json()["id"]
    assert created.json()["allowed_networks"] is None
    path = f"/admin/devices/{device_id}/allowed-networks"
    answer = await http.put(path, json={"networks": ["10.0.0.5/24", "198.51.100.7"]}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["allowed_networks"] == ["10.0.0.0/24", "198.51.100.7/32"]
    entry = await last_audit(db, "device.allowed_networks", f"device:{device_id}")
    assert entry["details"]["networks"] == ["10.0.0.0/24", "198.51.100.7/32"]
    listed = (
        await http.get("/admin/devices", params={"imei": created.json()["imei"]}, headers=admin.headers)
    ).json()
    assert listed["items"][0]["allowed_networks"] == ["10.0.0.0/24", "198.51.100.7/32"]
    bad = await http.put(path, json={"networks": ["10.0.0.0/33"]}, headers=admin.headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_networks"
    cleared = await http.put(path, json={"networks": []}, headers=admin.headers)
    assert cleared.status_code == 200 and cleared.json()["allowed_networks"] is None
    unknown = await http.put(
        "/admin/devices/999999999/allowed-networks", json={"networks": None}, headers=admin.headers
    )
    assert unknown.status_code == 404
    protocol = await http.post(
        "/admin/devices", json={"imei": unique_imei(), "protocol": "gps103"}, headers=admin.headers
    )
    assert protocol.status_code == 422


async def test_raw_frame_excerpts_say_so(http: httpx.AsyncClient, db: Database, admin: Account) -> None:
    import hashlib

    whole = b"@NTC" + bytes(300)
    async with db.system() as conn:
        device_id = await conn.fetchval("INSERT INTO devices (imei) VALUES ($1) RETURNING id", unique_imei())
        await conn.execute(
            """INSERT INTO raw_frames (device_id, protocol, frame_type, peer, data, outcome, error,
                                       frame_length, frame_sha256)
               VALUES ($1, 'navtelecom', 'ntcb', '203.0.113.9:1', $2, 'rejected', 'bad', $3, $4),
                      ($1, 'navtelecom', 'ntcb', '203.0.113.9:1', '\\x7e41'::bytea, 'ok', NULL, NULL, NULL)""",
            device_id,
            whole[:256],
            len(whole),
            hashlib.sha256(whole).digest(),
        )
    frames = (await http.get(f"/api/v2/devices/{device_id}/raw-frames", headers=admin.headers)).json()
    by_outcome = {f["outcome"]: f for f in frames["items"]}
    cut = by_outcome["rejected"]
    assert cut["excerpt"] is True and cut["size"] == 256 and cut["frame_length"] == 304
    assert cut["frame_sha256"] == hashlib.sha256(whole).hexdigest()
    full = by_outcome["ok"]
    assert (
        full["excerpt"] is False
        and full["frame_length"] == full["size"] == 2
        and full["frame_sha256"] is None
    )
