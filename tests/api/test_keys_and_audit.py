"""Personal API keys (scoped like their owner, shown once, revocable) and the audit log."""

from __future__ import annotations

import hashlib

import httpx

from fleet.config import Settings
from fleet.db import Database

from .conftest import PASSWORD, Account, make_account, make_fleet, unique_email


async def test_api_key_lifecycle(http: httpx.AsyncClient, db: Database, api_settings: Settings) -> None:
    owner = await make_account(db, api_settings)
    mine = await make_fleet(db, owner)
    await make_fleet(db, await make_account(db, api_settings))

    created = await http.post("/auth/api-keys", json={"name": "grafana"}, headers=owner.headers)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    prefix = created.json()["prefix"]
    assert key.startswith(f"flt_{prefix}_")
    async with db.system() as conn:
        stored = await conn.fetchrow("SELECT key_hash FROM api_keys WHERE prefix = $1", prefix)
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()

    by_key = {"Authorization": f"Bearer {key}"}
    vehicles = (await http.get("/vehicles", headers=by_key)).json()
    assert [v["id"] for v in vehicles["items"]] == [mine.vehicle_id]
    me = (await http.get("/auth/me", headers=by_key)).json()
    assert me["auth"] == "api_key" and me["user_id"] == owner.id
    assert (await http.get("/admin/users/pending", headers=by_key)).status_code == 403

    listed = (await http.get("/auth/api-keys", headers=owner.headers)).json()
    assert listed["total"] == 1 and "key" not in listed["items"][0]
    assert listed["items"][0]["last_used_at"] is not None

    other = await make_account(db, api_settings)
    assert (
        await http.delete(f"/auth/api-keys/{created.json()['id']}", headers=other.headers)
    ).status_code == 404
    assert (
        await http.delete(f"/auth/api-keys/{created.json()['id']}", headers=owner.headers)
    ).status_code == 204
    refused = await http.get("/vehicles", headers=by_key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    tampered = {"Authorization": f"Bearer {key[:-3]}abc"}
    assert (await http.get("/vehicles", headers=tampered)).status_code == 401

    async with db.system() as conn:
        actions = [
            r["action"]
            for r in await conn.fetch(
                "SELECT action FROM admin_audit_log WHERE actor_id = $1 ORDER BY id", owner.id
            )
        ]
    assert actions == ["api_key.create", "api_key.revoke"]


async def test_static_key_cannot_own_api_keys(http: httpx.AsyncClient, api_settings: Settings) -> None:
    assert api_settings.api_key is not None
    response = await http.post(
        "/auth/api-keys",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {api_settings.api_key.get_secret_value()}"},
    )
    assert response.status_code == 400


async def test_audit_log_records_logins_failures_and_admin_actions(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    from fleet.passwords import hash_password

    owner = await make_account(db, api_settings, password_hash=await hash_password(PASSWORD))
    fleet = await make_fleet(db, admin)
    # Ignored: TRUSTED_PROXIES is empty by default, so the address recorded is the socket peer's.
    forwarded = {"X-Forwarded-For": "192.0.2.44"}
    assert (
        await http.post(
            "/auth/login", json={"email": owner.email, "password": "nope nope"}, headers=forwarded
        )
    ).status_code == 401
    assert (
        await http.post(
            "/auth/login", json={"email": unique_email("ghost"), "password": "nope nope"}, headers=forwarded
        )
    ).status_code == 401
    assert (
        await http.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
    ).status_code == 200
    await http.post(
        f"/admin/vehicles/{fleet.vehicle_id}/assign", json={"user_id": owner.id}, headers=admin.headers
    )

    failed = (
        await http.get(
            "/api/audit", params={"action": "auth.login_failed", "actor": owner.email}, headers=admin.headers
        )
    ).json()
    assert failed["total"] == 1
    assert failed["items"][0]["client_addr"] == "127.0.0.1"
    assert failed["items"][0]["details"]["reason"] == "bad_credentials"
    by_id = (await http.get("/api/audit", params={"actor": str(owner.id)}, headers=admin.headers)).json()
    assert {"auth.login", "auth.login_failed"} <= {e["action"] for e in by_id["items"]}
    prefix = (
        await http.get("/api/audit", params={"action": "vehicle.", "limit": 1}, headers=admin.headers)
    ).json()
    assert prefix["items"][0]["action"] == "vehicle.assign" and prefix["limit"] == 1
    assert prefix["items"][0]["details"]["user_id"] == owner.id
    assert (await http.get("/api/audit", headers=owner.headers)).status_code == 403
    async with db.system() as conn:
        ghost = await conn.fetchval(
            "SELECT count(*) FROM admin_audit_log WHERE action = 'auth.login_failed' AND actor_id IS NULL "
            "AND client_addr = '127.0.0.1'"
        )
    assert ghost >= 1


async def test_admin_endpoints_need_a_superuser(
    http: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    owner = await make_account(db, api_settings)
    for method, path in (
        ("GET", "/admin/users/pending"),
        ("GET", "/admin/users"),
        ("POST", f"/admin/users/{owner.id}/approve"),
        ("POST", f"/admin/users/{owner.id}/block"),
    ):
        response = await http.request(method, path, headers=owner.headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", path


async def test_admin_user_listing_and_errors(
    http: httpx.AsyncClient, db: Database, api_settings: Settings, admin: Account
) -> None:
    pending = await make_account(db, api_settings, status="pending")
    listed = (
        await http.get("/admin/users", params={"status": "pending", "limit": 1000}, headers=admin.headers)
    ).json()
    assert pending.id in [u["id"] for u in listed["items"]]
    assert (await http.post("/admin/users/999999999/approve", headers=admin.headers)).status_code == 404
    assert (await http.post(f"/admin/users/{admin.id}/approve", headers=admin.headers)).status_code == 409
    bad_assign = await http.post("/admin/vehicles/1/assign", json={}, headers=admin.headers)
    assert bad_assign.status_code == 422
    missing = await http.post(
        "/admin/vehicles/999999999/assign", json={"user_id": pending.id}, headers=admin.headers
    )
    assert missing.status_code == 404
