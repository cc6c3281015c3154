"""The whole owner journey over real HTTP: register → pending → approve (mail) → assign → see the vehicle."""

from __future__ import annotations

import asyncio

import httpx

from fleet.db import Database

from .conftest import PASSWORD, Account, LiveServer, MailHandler, make_fleet, unique_email


async def wait_for_mail(
    handler: MailHandler, address: str, subject: str, within: float = 10, containing: str = ""
) -> str:
    for _ in range(int(within / 0.05)):
        for message in handler.to(address):
            if subject in message.content and containing in message.content:
                return message.content
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail {subject!r} to {address}")


async def test_registration_approval_and_assigned_vehicles(
    live_api: LiveServer, admin: Account, db: Database, smtp_server: tuple[MailHandler, int]
) -> None:
    mail, _ = smtp_server
    email = unique_email("flow")
    async with (
        httpx.AsyncClient(base_url=live_api.url) as owner,
        httpx.AsyncClient(base_url=live_api.url) as boss,
    ):
        boss.headers.update(admin.headers)

        registered = await owner.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 202, registered.text
        # Every active superuser is told, through the outbox and the real SMTP server; the registrant too.
        await wait_for_mail(mail, admin.email, "awaiting approval", containing=email)
        await wait_for_mail(mail, email, "registration received")

        login = await owner.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        assert login.json()["user"]["status"] == "pending"
        owner.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        assert (await owner.get("/auth/me")).json()["status"] == "pending"
        for path in ("/vehicles", "/api/v2/devices", "/auth/api-keys"):
            waiting = await owner.get(path)
            assert waiting.status_code == 403, path
            assert waiting.json()["error"]["code"] == "pending_approval"

        pending = (await boss.get("/admin/users/pending", params={"limit": 1000})).json()
        (user,) = [item for item in pending["items"] if item["email"] == email]
        assert user["status"] == "pending" and user["role"] == "owner"

        approved = await boss.post(f"/admin/users/{user['id']}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "active"
        await wait_for_mail(mail, email, "account activated")

        mine = await make_fleet(db, admin, name="flow truck")  # a vehicle the admin owns, not the new owner
        other = await make_fleet(db, admin, name="flow other truck")
        assigned = await boss.post(f"/admin/vehicles/{mine.vehicle_id}/assign", json={"email": email})
        assert assigned.status_code == 200 and assigned.json()["granted"] is True
        again = await boss.post(f"/admin/vehicles/{mine.vehicle_id}/assign", json={"user_id": user["id"]})
        assert again.json()["granted"] is False

        # The same access token works now: status is read from the database on every request.
        vehicles = await owner.get("/vehicles")
        assert vehicles.status_code == 200, vehicles.text
        body = vehicles.json()
        assert [v["id"] for v in body["items"]] == [mine.vehicle_id]
        assert body["total"] == 1 and body["has_more"] is False
        assert body["items"][0]["devices"] == [{"id": mine.device_id, "imei": mine.imei}]
        assert (await owner.get(f"/vehicles/{other.vehicle_id}")).status_code == 404

        # A fresh sign-in after approval: active, and the same single vehicle.
        relogin = await owner.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert relogin.json()["user"]["status"] == "active" and relogin.json()["message"] is None
        fresh = {"Authorization": f"Bearer {relogin.json()['access_token']}"}
        again_listed = (await owner.get("/vehicles", headers=fresh)).json()
        assert [v["id"] for v in again_listed["items"]] == [mine.vehicle_id]
        status = (await owner.get(f"/vehicles/{mine.vehicle_id}/status", headers=fresh)).json()
        assert status["status"] == "unknown" and status["last_position"] is None  # never seen yet

        audit = (await boss.get("/api/audit", params={"actor": email, "limit": 50})).json()
        actions = {entry["action"] for entry in audit["items"]}
        assert {"auth.register", "auth.login"} <= actions
        approvals = (await boss.get("/api/audit", params={"action": "user.approve", "limit": 200})).json()
        assert any(entry["target"] == f"user:{user['id']}" for entry in approvals["items"])
