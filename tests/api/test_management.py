"""The management API (INTERFACES.md §2): every operation over HTTP, with the audit row it leaves."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from fleet.config import Settings
from fleet.db import Database
from fleet.sync.service import SyncService
from tests.sync.doubles import FakeVehicle, serve

from .conftest import Account, add_positions, make_account, make_fleet, unique, unique_imei


async def last_audit(db: Database, action: str, target: str) -> dict[str, Any]:
    async with db.system() as conn:
        row = await conn.fetchrow(
            """SELECT actor_id, actor_email, action, target, details, host(client_addr) AS client_addr
               FROM admin_audit_log WHERE action = $1 AND target = $2 ORDER BY id DESC LIMIT 1""",
            action,
            target,
        )
    assert row is not None, f"no audit row {action} {target}"
    return dict(row)


async def test_vehicle_lifecycle(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    owner = await make_account(db, api_settings)
    name = unique("Truck")
    created = await http.post(
        "/admin/vehicles",
        json={"name": name, "vpn_ip": "10.0.0.7", "api_key": "vehicle-key-1234", "owner_ids": [owner.id]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    vehicle = created.json()
    assert vehicle["name"] == name and vehicle["status"] == "unknown" and vehicle["devices"] == []
    vid = vehicle["id"]
    entry = await last_audit(db, "vehicle.create", f"vehicle:{vid}")
    assert entry["actor_id"] == admin.id and entry["details"]["owner_ids"] == [owner.id]
    assert entry["details"]["api_key"] == "set" and "vehicle-key-1234" not in str(entry)
    assert [v["id"] for v in (await http.get("/vehicles", headers=owner.headers)).json()["items"]] == [vid]

    edited = await http.patch(
        f"/admin/vehicles/{vid}", json={"vpn_ip": "10.0.0.8", "api_port": 8002}, headers=admin.headers
    )
    assert edited.status_code == 200, edited.text
    changes = (await last_audit(db, "vehicle.edit", f"vehicle:{vid}"))["details"]["changes"]
    assert changes == {
        "vpn_ip": {"from": "10.0.0.7", "to": "10.0.0.8"},
        "api_port": {"from": 8001, "to": 8002},
    }
    cleared = await http.patch(f"/admin/vehicles/{vid}", json={"vpn_ip": None}, headers=admin.headers)
    assert cleared.status_code == 200
    async with db.system() as conn:
        assert await conn.fetchval("SELECT vpn_ip FROM vehicles WHERE id = $1", vid) is None
    for bad in ({"vpn_ip": "300.1.1.1"}, {"api_port": 70000}, {"name": None}, {"colour": "red"}):
        answer = await http.patch(f"/admin/vehicles/{vid}", json=bad, headers=admin.headers)
        assert answer.status_code in (400, 422), bad

    # An owner renames their own vehicle; another owner's is not there for them; owners cannot administrate.
    renamed = await http.patch(f"/vehicles/{vid}", json={"name": name + " (blue)"}, headers=owner.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == name + " (blue)"
    rename_entry = await last_audit(db, "vehicle.rename", f"vehicle:{vid}")
    assert rename_entry["actor_id"] == owner.id and rename_entry["details"]["previous"] == name
    stranger = await make_account(db, api_settings)
    assert (
        await http.patch(f"/vehicles/{vid}", json={"name": "mine"}, headers=stranger.headers)
    ).status_code == 404
    for method, path in (
        ("POST", "/admin/vehicles"),
        ("PATCH", f"/admin/vehicles/{vid}"),
        ("DELETE", f"/admin/vehicles/{vid}"),
        ("POST", f"/admin/vehicles/{vid}/api-key"),
        ("GET", "/admin/devices"),
        ("POST", "/admin/devices"),
    ):
        refused = await http.request(method, path, json={"name": "x"}, headers=owner.headers)
        assert refused.status_code == 403, (method, path)

    # Access is taken away again; then the vehicle is deleted, its tracker unlinked.
    gone = await http.delete(f"/admin/vehicles/{vid}/access/{owner.id}", headers=admin.headers)
    assert gone.status_code == 204
    assert (await http.get(f"/vehicles/{vid}", headers=owner.headers)).status_code == 404
    assert (
        await http.delete(f"/admin/vehicles/{vid}/access/{owner.id}", headers=admin.headers)
    ).status_code == 404
    assert (await last_audit(db, "vehicle.unassign", f"vehicle:{vid}"))["details"]["user_id"] == owner.id
    device = await http.post(
        "/admin/devices", json={"imei": unique_imei(), "vehicle_id": vid}, headers=admin.headers
    )
    assert device.status_code == 201
    deleted = await http.delete(f"/admin/vehicles/{vid}", headers=admin.headers)
    assert deleted.status_code == 204
    assert (await http.get(f"/vehicles/{vid}", headers=admin.headers)).status_code == 404
    async with db.system() as conn:
        assert (
            await conn.fetchval("SELECT vehicle_id FROM devices WHERE id = $1", device.json()["id"]) is None
        )
    assert (await last_audit(db, "vehicle.delete", f"vehicle:{vid}"))["details"]["name"] == name + " (blue)"
    assert (await http.delete(f"/admin/vehicles/{vid}", headers=admin.headers)).status_code == 404


async def test_vehicle_names_are_unique_per_owner(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    alice = await make_account(db, api_settings)
    bob = await make_account(db, api_settings)
    name = unique("Van")
    first = await http.post(
        "/admin/vehicles", json={"name": name, "owner_ids": [alice.id]}, headers=admin.headers
    )
    assert first.status_code == 201
    clash = await http.post(
        "/admin/vehicles", json={"name": name.upper(), "owner_ids": [alice.id]}, headers=admin.headers
    )
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "duplicate_name"
    other = await http.post(
        "/admin/vehicles", json={"name": name, "owner_ids": [bob.id]}, headers=admin.headers
    )
    assert other.status_code == 201  # another owner may use the name
    # Giving Bob's vehicle to Alice too would show her two vehicles of one name.
    assign = await http.post(
        f"/admin/vehicles/{other.json()['id']}/assign", json={"user_id": alice.id}, headers=admin.headers
    )
    assert assign.status_code == 409 and assign.json()["error"]["code"] == "duplicate_name"
    third = await http.post(
        "/admin/vehicles", json={"name": unique("Van"), "owner_ids": [alice.id]}, headers=admin.headers
    )
    rename = await http.patch(f"/vehicles/{third.json()['id']}", json={"name": name}, headers=alice.headers)
    assert rename.status_code == 409
    missing_owner = await http.post(
        "/admin/vehicles", json={"name": unique("Van"), "owner_ids": [2**62]}, headers=admin.headers
    )
    assert missing_owner.status_code == 400


async def test_vehicle_api_key(http: httpx.AsyncClient, db: Database, admin: Account) -> None:
    vid = (await http.post("/admin/vehicles", json={"name": unique("Bus")}, headers=admin.headers)).json()[
        "id"
    ]
    async with db.system() as conn:
        await conn.execute(
            "UPDATE vehicles SET sync_failures = 5, sync_next_at = now() + interval '1 hour' WHERE id = $1",
            vid,
        )
    generated = await http.post(f"/admin/vehicles/{vid}/api-key", headers=admin.headers)
    assert generated.status_code == 200 and generated.json()["source"] == "generated"
    key = generated.json()["api_key"]
    assert len(key) >= 40
    async with db.system() as conn:
        row = await conn.fetchrow(
            "SELECT api_key, sync_failures, sync_next_at FROM vehicles WHERE id = $1", vid
        )
    assert row["api_key"] == key and row["sync_failures"] == 0 and row["sync_next_at"] is None
    entry = await last_audit(db, "vehicle.api_key", f"vehicle:{vid}")
    assert entry["details"]["api_key"] == "generated" and key not in str(entry)
    given = await http.post(
        f"/admin/vehicles/{vid}/api-key", json={"api_key": "on-the-vehicle-42"}, headers=admin.headers
    )
    assert given.json() == {"vehicle_id": vid, "api_key": None, "source": "set"}
    cleared = await http.post(
        f"/admin/vehicles/{vid}/api-key", json={"use_default": True}, headers=admin.headers
    )
    assert cleared.json()["source"] == "default"
    async with db.system() as conn:
        assert await conn.fetchval("SELECT api_key FROM vehicles WHERE id = $1", vid) is None
    bad = await http.post(
        f"/admin/vehicles/{vid}/api-key", json={"api_key": "has space"}, headers=admin.headers
    )
    assert bad.status_code == 400
    assert (await http.post("/admin/vehicles/999999999/api-key", headers=admin.headers)).status_code == 404


async def test_trackers_register_link_move_unlink_delete(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    owner = await make_account(db, api_settings)
    fleet_a = await make_fleet(db, owner)
    fleet_b = await make_fleet(db, owner)
    for bad in ("123", "12345678901234a", "1234567890123456", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥"):
        answer = await http.post(
            "/admin/devices", json={"imei": bad, "protocol": "teltonika"}, headers=admin.headers
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_imei", bad
    imei = unique_imei()
    created = await http.post(
        "/admin/devices", json={"imei": imei, "protocol": "teltonika"}, headers=admin.headers
    )
    assert created.status_code == 201 and created.json()["vehicle_id"] is None
    device_id = created.json()["id"]
    duplicate = await http.post("/admin/devices", json={"imei": imei}, headers=admin.headers)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "device_exists"
    assert (await last_audit(db, "device.register", f"device:{device_id}"))["details"][
        "protocol"
    ] == "teltonika"

    unlinked = (
        await http.get("/admin/devices", params={"linked": "false", "imei": imei}, headers=admin.headers)
    ).json()
    assert [d["id"] for d in unlinked["items"]] == [device_id] and unlinked["items"][0][
        "vehicle_name"
    ] is None

    linked = await http.post(
        f"/admin/devices/{device_id}/link", json={"vehicle_id": fleet_a.vehicle_id}, headers=admin.headers
    )
    assert linked.status_code == 200 and linked.json()["vehicle_id"] == fleet_a.vehicle_id
    assert (await last_audit(db, "device.link", f"device:{device_id}"))["details"][
        "previous_vehicle_id"
    ] is None
    # Taking it from vehicle A needs an explicit move.
    taken = await http.post(
        f"/admin/devices/{device_id}/link", json={"vehicle_id": fleet_b.vehicle_id}, headers=admin.headers
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "device_linked_elsewhere"
    moved = await http.post(
        f"/admin/devices/{device_id}/link",
        json={"vehicle_id": fleet_b.vehicle_id, "move": True},
        headers=admin.headers,
    )
    assert moved.status_code == 200 and moved.json()["vehicle_id"] == fleet_b.vehicle_id
    move_entry = await last_audit(db, "device.move", f"device:{device_id}")
    assert move_entry["details"]["previous_vehicle_id"] == fleet_a.vehicle_id
    listed = (
        await http.get("/admin/devices", params={"vehicle_id": fleet_b.vehicle_id}, headers=admin.headers)
    ).json()
    assert device_id in [d["id"] for d in listed["items"]]

    off = await http.post(f"/admin/devices/{device_id}/unlink", headers=admin.headers)
    assert off.status_code == 200 and off.json()["vehicle_id"] is None
    assert (await last_audit(db, "device.unlink", f"device:{device_id}"))["details"][
        "previous_vehicle_id"
    ] == fleet_b.vehicle_id
    assert (await http.delete(f"/admin/devices/{device_id}", headers=admin.headers)).status_code == 204
    assert (await last_audit(db, "device.delete", f"device:{device_id}"))["details"]["imei"] == imei
    assert (await http.delete(f"/admin/devices/{device_id}", headers=admin.headers)).status_code == 404

    # A tracker with stored history is unlinked, not deleted.
    from datetime import UTC, datetime

    await add_positions(db, fleet_a, datetime.now(UTC), 3)
    kept = await http.delete(f"/admin/devices/{fleet_a.device_id}", headers=admin.headers)
    assert kept.status_code == 409 and kept.json()["error"]["code"] == "device_has_history"
    assert (
        await http.get("/admin/devices", params={"status": "sideways"}, headers=admin.headers)
    ).status_code == 422


async def test_sync_state_says_why_a_vehicle_is_not_online(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    owner = await make_account(db, api_settings)
    not_pulled = await make_fleet(db, owner)
    state = (await http.get(f"/vehicles/{not_pulled.vehicle_id}/sync", headers=owner.headers)).json()
    assert state["status"] == "unknown" and state["pulled"] is False and state["journal"] == []
    assert state["reason"].startswith("not pulled: the vehicle has no vpn_ip")

    vehicle = FakeVehicle(api_key="the-right-key-0123456789")
    async with serve(vehicle) as port:
        created = await http.post(
            "/admin/vehicles",
            json={
                "name": unique("Bus"),
                "vpn_ip": "127.0.0.1",
                "api_port": port,
                "api_key": "a-wrong-key-0123456789",
                "owner_ids": [owner.id],
            },
            headers=admin.headers,
        )
        vid = created.json()["id"]
        settings = api_settings.model_copy(
            update={"pull_timeout_sec": 2.0, "vehicle_default_api_key": SecretStr("x" * 20)}
        )
        async with SyncService(db, settings) as service:
            await service.run_cycle(only=[vid], force=True)
        state = (await http.get(f"/vehicles/{vid}/sync", headers=owner.headers)).json()
        assert state["status"] == "unknown" and state["api_key"] == "vehicle"
        assert "refused the API key" in state["reason"], state
        assert state["journal"][0]["status"] == "error" and state["failing_cycles"] == 1

        # The administrator sets the right key; the next cycle brings the vehicle online.
        fixed = await http.post(
            f"/admin/vehicles/{vid}/api-key",
            json={"api_key": "the-right-key-0123456789"},
            headers=admin.headers,
        )
        assert fixed.status_code == 200
        async with SyncService(db, settings) as service:
            await service.run_cycle(only=[vid])  # due at once: setting the key restarted the schedule
    state = (await http.get(f"/vehicles/{vid}/sync", params={"limit": 1}, headers=owner.headers)).json()
    assert state["status"] == "online" and state["reason"] is None and len(state["journal"]) == 1
    assert state["journal"][0]["status"] == "ok" and state["failing_cycles"] == 0
    stranger = await make_account(db, api_settings)
    assert (await http.get(f"/vehicles/{vid}/sync", headers=stranger.headers)).status_code == 404
